"""When a timed patch is active: a window of schedule steps and a window of sigmas.

Steps are 1-based; a negative step counts from the end (-1 is the last step). A model evaluation
at sigma belongs to the step whose interval starts at it; a final denoising evaluation at the last
sigma belongs to the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEP_LIMIT = 100


@dataclass(frozen=True)
class Window:
    """Active for steps first_step..last_step (inclusive) and sigmas in [sigma_low, sigma_high]."""

    first_step: int = 1
    last_step: int = -1
    sigma_high: float = float("inf")
    sigma_low: float = 0.0

    @property
    def every_step(self) -> bool:
        """True when the step part of the window covers any schedule, so no schedule is needed."""
        return self.first_step == 1 and self.last_step == -1

    def steps(self, total_steps: int) -> range:
        """The 1-based steps of a ``total_steps`` schedule this window covers (maybe empty)."""
        first, last = (s if s > 0 else total_steps + 1 + s for s in (self.first_step, self.last_step))
        return range(max(first, 1), min(last, total_steps) + 1)

    def active(self, sigma: float, schedule: list[float] | None) -> bool:
        """Whether an evaluation at ``sigma`` on ``schedule`` (descending sigmas) is in the window."""
        if not self.sigma_low <= sigma <= self.sigma_high:
            return False
        if self.every_step:
            return True
        if schedule is None:
            raise RuntimeError(
                "Timed FreeU: a step window (first_step/last_step) needs the sampling schedule, which "
                "this ComfyUI version passes to model patches only through the Few-Step DPM++ Sampler. "
                "Use that sampler, or leave first_step=1, last_step=-1 and use start_percent/end_percent.")
        total_steps = len(schedule) - 1
        return step_of_sigma(sigma, schedule) in self.steps(total_steps)


def active_steps(window: Window, schedule: list[float]) -> list[int]:
    """The 1-based steps of ``schedule`` (N+1 descending sigmas, N evaluations, one at the start sigma
    of each step) at which ``window`` is active: its step range and its sigma range both hold."""
    return [step for step in range(1, len(schedule)) if window.active(schedule[step - 1], schedule)]


def percent_to_sigma(percent: float, sigma_table: list[float]) -> float:
    """ComfyUI's start/end percent of a discrete-time model as a sigma: 0 means before the first step
    (an infinite sigma: every sigma passes), 1 means sigma 0, and in between the sigma at the fractional
    timestep (1 - percent) * (T - 1), log-sigma interpolated in the model's sigma table (T entries)."""
    if percent <= 0.0:
        return math.inf
    if percent >= 1.0:
        return 0.0
    t = (1.0 - percent) * (len(sigma_table) - 1)
    low = math.floor(t)
    high = min(low + 1, len(sigma_table) - 1)
    a, b = math.log(sigma_table[low]), math.log(sigma_table[high])
    return math.exp(a + (t - low) * (b - a))


def check_window(first_step: int, last_step: int, start_percent: float, end_percent: float) -> str | None:
    """Message for a window (as Timed FreeU's inputs give it) with a step out of range, steps of the same
    sign in reverse order (a window empty for every schedule), or a percent out of range or reversed,
    else None. Steps of mixed signs can select no step of a short schedule: ``empty_window_message``."""
    for name, value in (("first_step", first_step), ("last_step", last_step)):
        message = check_step(name, value)
        if message:
            return message
    if (first_step > 0) == (last_step > 0) and first_step > last_step:
        return (f"first_step = {first_step} is after last_step = {last_step}: the window selects no step (steps are "
                f"inclusive, counted {'from the start' if first_step > 0 else 'from the end'}); for steps "
                f"{last_step} to {first_step} swap them")
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if not 0.0 <= value <= 1.0:
            return f"{name} = {value} is out of range: allowed 0.0 to 1.0"
    if start_percent > end_percent:
        return f"start_percent = {start_percent} must not be above end_percent = {end_percent}"
    return None


def empty_window_message(first_step: int, last_step: int, total_steps: int) -> str | None:
    """Message when the step window selects no step of a ``total_steps`` schedule (it can only be known once
    the schedule is: e.g. first_step = 5, last_step = -3 is steps 5 to 5 of 7 and nothing of 6), else None."""
    window = Window(first_step, last_step)
    if window.steps(total_steps):
        return None
    first, last = (s if s > 0 else total_steps + 1 + s for s in (first_step, last_step))
    return (f"first_step = {first_step} and last_step = {last_step} select no step of this {total_steps}-step "
            f"schedule (they resolve to steps {first} to {last}), so this Timed FreeU does nothing")


def step_of_sigma(sigma: float, schedule: list[float]) -> int:
    """1-based step of an evaluation at ``sigma``: 1 + the number of later schedule sigmas it has reached."""
    reached = sum(1 for s in schedule[1:] if s >= sigma * (1.0 - 1e-4))
    return min(reached + 1, max(len(schedule) - 1, 1))


def check_step(name: str, value: int) -> str | None:
    """Message for a step input that is 0 or beyond the limit, else None."""
    if value == 0 or abs(value) > STEP_LIMIT:
        return (f"{name} = {value} is out of range: allowed 1 to {STEP_LIMIT} (counted from the start) "
                f"or -1 to -{STEP_LIMIT} (counted from the end, -1 = last step)")
    return None
