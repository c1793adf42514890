"""The schedule tuner: search a few-step schedule for one model, solver and step budget.

Objective. For a few probe noises, the N-step result x_N (the latent at the schedule's last, non-zero
sigma: what the paper decodes) is compared with a high-accuracy solution of the same probability-flow
ODE from the same noise carried to sigma 0 (by default 40 steps of DPM++2M on a Karras schedule to
sigma_min, then its denoised prediction). The distance is the mean over probes of each probe's RMS
over its latent elements. Per probe and not pooled: a probe whose few-step trajectory ends in another
mode than the reference (another composition) has an error far above the rest, and a pooled squared
mean would let that one event, which says little about the schedule, steer the search (on the
analytic benchmark the pooled RMS overfits the probes badly). Comparing with the reference at
sigma 0, not at the schedule's own last sigma, is what lets the end point be searched: at its own
last sigma a schedule that stops earlier has less to solve and would always look better, while
the image the user gets is decoded from x_N and should be the clean one. The residual noise of an
early stop therefore counts against it, and the search trades it against the truncation error of
the last steps.

Search space, from the paper's recipe for N: the end point (end_index k and base_rho of the base list,
which together set t_end), time_rho, and then (``free_positions``) the N-1 interior positions of the
Karras spacing in timestep space, as softmax logits of the N increments (always strictly increasing,
so every candidate is a valid schedule). The search is a deterministic compass (pattern) search on
log(base_rho), log(time_rho) and the logits, +-1 on end_index, with expansion along successful moves
and step halving; it stops when the steps are below their resolution, at the time budget, or at a
candidate limit, and returns the best schedule seen, rounded to its text form (``params.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .params import ScheduleParams, format_params, rounded
from .recipes import RHO_RANGE, TIME_RHO_RANGE, recipe_for_step_count
from .schedule import karras_sigmas, schedule_problem
from .solvers import SCHEDULE_SOLVERS, sample_solver

REFERENCE_STEPS = 40
LOGIT_LIMIT = 3.0  # increments stay within a factor e^6 of each other: none collapses
INITIAL_STEP = {"base_rho": 0.25, "time_rho": 0.15, "ramp": 0.4}  # in log / logit units
FINAL_STEP = {"base_rho": 0.004, "time_rho": 0.004, "ramp": 0.01}

Run = Callable[[torch.Tensor, str], torch.Tensor]


def denoiser_run(denoiser: Callable, x_start: torch.Tensor, sigma_table: torch.Tensor | None = None) -> Run:
    """run(sigmas, solver): the solver over ``sigmas`` from ``x_start`` with D(x, sigma_batch) = ``denoiser``
    (``sigma_table``: the model's, for the AFS midpoint of "unipc_afs"; default the standard one)."""
    def run(sigmas: torch.Tensor, solver: str) -> torch.Tensor:
        with torch.no_grad():
            return sample_solver(denoiser, x_start, sigmas, disable=True, solver=solver, sigma_table=sigma_table)
    return run


def reference_sigmas(sigma_table: torch.Tensor, steps: int = REFERENCE_STEPS) -> torch.Tensor:
    """Karras (rho 7) from the table's sigma_max to its sigma_min, then 0: ``steps`` evaluations of DPM++2M."""
    table = sigma_table.to(torch.float64)
    sigmas = karras_sigmas(steps, float(table[0]), float(table[-1]), 7.0)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch (probes) of each probe's RMS difference."""
    difference = (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).reshape(a.shape[0], -1)
    return float(difference.pow(2).mean(1).sqrt().mean())


def valid_schedule(sigmas: torch.Tensor, steps: int) -> bool:
    """N+1 finite sigmas, positive, strictly descending by steps that count (``schedule.schedule_problem``)."""
    return len(sigmas) == steps + 1 and schedule_problem(sigmas) is None


@dataclass
class TuneResult:
    """The best schedule found and how the search went."""

    params: ScheduleParams
    text: str  # format_params(params): paste into Few-Step Sigmas' `params`
    sigmas: torch.Tensor
    objective: float  # distance of x_N to the reference at sigma 0 (mean per-probe RMS)
    start_objective: float  # the same for the starting recipe
    candidates: int  # schedules evaluated (the starting one included)
    model_evaluations: int  # reference included
    seconds: float
    stopped_by: str  # "converged", "time budget" or "candidate limit"
    history: list[tuple[int, float]] = field(default_factory=list)  # (candidates, best objective) at improvements


@dataclass(frozen=True)
class _Point:
    """A point of the search space: recipe parameters and the logits of the N step increments."""

    end_index: int
    log_base_rho: float
    log_time_rho: float
    logits: tuple[float, ...]  # N-1 values; the first increment's logit is fixed at 0

    def params(self, base: ScheduleParams, free_positions: bool) -> ScheduleParams:
        ramp = None
        if free_positions and any(self.logits):
            weights = torch.tensor((0.0, *self.logits), dtype=torch.float64).softmax(0)
            ramp = tuple(weights.cumsum(0)[:-1].tolist())
        return rounded(replace(base, end_index=self.end_index, base_rho=math.exp(self.log_base_rho),
                               time_rho=math.exp(self.log_time_rho), ramp=ramp))


def _bounded(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def tune(run: Run, sigma_table: torch.Tensor, steps: int, solver: str, *, start: ScheduleParams | None = None,
         time_budget: float = 60.0, reference_steps: int = REFERENCE_STEPS, free_positions: bool = True,
         max_candidates: int | None = None, progress: Callable[[float, float], None] | None = None,
         check_interrupt: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic
         ) -> TuneResult:
    """Search the schedule of ``steps`` evaluations for ``solver`` that brings x_N closest to the reference.

    ``run(sigmas, solver)`` solves from the probe noises (batched) and returns the latent at sigmas[-1];
    ``start`` defaults to the paper's recipe family for ``steps`` (``recipe_for_step_count``).
    ``progress(fraction of the time budget, best objective)`` is called after each candidate;
    ``check_interrupt()`` before each one (it raises to abort). The time budget includes the reference.
    """
    if solver not in SCHEDULE_SOLVERS:
        raise ValueError(f"solver = {solver!r} is not one of {list(SCHEDULE_SOLVERS)}")
    if steps < 1:
        raise ValueError(f"steps = {steps} must be at least 1")
    began = clock()
    base = start or ScheduleParams.from_recipe(recipe_for_step_count(steps))
    base = replace(base, steps=steps, solver=solver, ramp=None)
    if free_positions and steps < 2:
        free_positions = False
    evaluations = [0]

    def solve(sigmas: torch.Tensor, which: str) -> torch.Tensor:
        if check_interrupt is not None:
            check_interrupt()
        evaluations[0] += len(sigmas) - 1
        return run(sigmas, which)

    reference = solve(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m")
    seen: dict[str, tuple[float, ScheduleParams, torch.Tensor]] = {}
    durations = [0.0]

    def evaluate(point: _Point) -> float:
        params = point.params(base, free_positions)
        text = format_params(params)
        if text not in seen:
            sigmas = params.sigmas(sigma_table)
            tick = clock()
            value = distance(solve(sigmas, solver), reference) if valid_schedule(sigmas, steps) else math.inf
            durations[0] = max(durations[0], clock() - tick)
            seen[text] = (value if math.isfinite(value) else math.inf, params, sigmas)
        return seen[text][0]

    def report(best_value: float) -> None:
        if progress is not None:
            progress(min((clock() - began) / time_budget, 1.0) if time_budget > 0 else 1.0, best_value)

    point = _Point(base.end_index, math.log(base.base_rho), math.log(base.time_rho), (0.0,) * (steps - 1))
    best = evaluate(point)
    start_value = best
    history = [(1, best)]
    report(best)

    log_rho = tuple(math.log(v) for v in RHO_RANGE)
    log_time_rho = tuple(math.log(v) for v in TIME_RHO_RANGE)

    def moved(p: _Point, coordinate: str, delta: float) -> _Point | None:
        if coordinate == "end_index":
            k = p.end_index + int(delta)
            return replace(p, end_index=k) if 1 <= k <= base.base_steps - 1 else None
        if coordinate == "base_rho":
            value = _bounded(p.log_base_rho + delta, *log_rho)
            return replace(p, log_base_rho=value) if value != p.log_base_rho else None
        if coordinate == "time_rho":
            value = _bounded(p.log_time_rho + delta, *log_time_rho)
            return replace(p, log_time_rho=value) if value != p.log_time_rho else None
        i = int(coordinate.split(":")[1])
        logits = list(p.logits)
        value = _bounded(logits[i] + delta, -LOGIT_LIMIT, LOGIT_LIMIT)
        if value == logits[i]:
            return None
        logits[i] = value
        return replace(p, logits=tuple(logits))

    def kind(coordinate: str) -> str:
        return coordinate.split(":")[0]

    def out_of_time() -> bool:
        return clock() - began + durations[0] > time_budget

    step = dict(INITIAL_STEP)
    coordinates = ["end_index", "base_rho", "time_rho"]
    stopped_by = "converged"
    stage_two = not free_positions
    while True:
        improved = False
        for coordinate in coordinates:
            for sign in (1.0, -1.0):
                delta = sign * (1.0 if coordinate == "end_index" else step[kind(coordinate)])
                candidate = moved(point, coordinate, delta)
                while candidate is not None:
                    if out_of_time():
                        stopped_by = "time budget"
                        break
                    if max_candidates is not None and len(seen) >= max_candidates:
                        stopped_by = "candidate limit"
                        break
                    value = evaluate(candidate)
                    report(min(best, value))
                    if not value < best * (1.0 - 1e-9):
                        break
                    point, best, improved = candidate, value, True
                    history.append((len(seen), best))
                    candidate = moved(point, coordinate, delta)  # keep going while it pays
                if stopped_by != "converged" or improved:
                    break
            if stopped_by != "converged":
                break
        if stopped_by != "converged":
            break
        if improved:
            continue
        if all(step[k] <= FINAL_STEP[k] for k in ("base_rho", "time_rho")) and \
                (not stage_two or not free_positions or step["ramp"] <= FINAL_STEP["ramp"]):
            if stage_two:
                break
            # the recipe parameters have settled: free the interior positions too
            stage_two = True
            coordinates += [f"ramp:{i}" for i in range(steps - 1)]
            step = {"base_rho": INITIAL_STEP["base_rho"] / 4, "time_rho": INITIAL_STEP["time_rho"] / 4,
                    "ramp": INITIAL_STEP["ramp"]}
            continue
        step = {k: v / 2 for k, v in step.items()}

    value, params, sigmas = min(seen.values(), key=lambda item: item[0])
    report(value)
    return TuneResult(params, format_params(params), sigmas, value, start_value, len(seen), evaluations[0],
                      clock() - began, stopped_by, history)
