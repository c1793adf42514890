"""The compass (pattern) search of the schedule tuner, versions up to 0.5: ``tune(..., method="pattern")``.

A point is the recipe's end_index, log(base_rho), log(time_rho) and (stage two) the N-1 softmax logits of
the interior positions (``tuner_objective.ramp_from_logits``). A sweep tries each coordinate in turn, + its
step first, then - (end_index by +-1); a move that lowers the objective (by more than a relative 1e-9) is
taken and repeated along the same direction while it pays. Once a sweep has gained, its later coordinates
try the + direction only (as in version 0.5). A sweep with a gain is followed by another at the same steps;
a sweep with none halves every step. Stage one moves the recipe parameters only; when their steps are at
or below FINAL_STEP it frees the logits (stage two: base_rho and time_rho back to a quarter of their first
steps, the logits at theirs), and it stops when all steps are at or below FINAL_STEP. Without free
positions there is no stage two. Hundreds to thousands of candidates to converge: kept for comparison
(``benchmarks/tuner_search.py``) and as the Gauss-Newton search's polish, from its result, in stage two at
once, with a quarter of the first steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .params import ScheduleParams, rounded
from .recipes import RHO_RANGE, TIME_RHO_RANGE
from .tuner_objective import LOGIT_LIMIT, SearchContext, bounded, logits_from_ramp, ramp_from_logits

INITIAL_STEP = {"base_rho": 0.25, "time_rho": 0.15, "ramp": 0.4}  # in log / logit units
FINAL_STEP = {"base_rho": 0.004, "time_rho": 0.004, "ramp": 0.01}


@dataclass(frozen=True)
class _Point:
    """A point of the search space: recipe parameters and the logits of the N step increments."""

    end_index: int
    log_base_rho: float
    log_time_rho: float
    logits: tuple[float, ...]  # N-1 values; the first increment's logit is fixed at 0

    def params(self, base: ScheduleParams, free_positions: bool) -> ScheduleParams:
        return rounded(replace(base, end_index=self.end_index, base_rho=math.exp(self.log_base_rho),
                               time_rho=math.exp(self.log_time_rho),
                               ramp=ramp_from_logits(self.logits) if free_positions else None))


def compass_search(context: SearchContext, base: ScheduleParams, free_positions: bool,
                   start: ScheduleParams | None = None, scale: float = 1.0) -> None:
    """The compass (pattern) search of versions up to 0.5: +-1 on end_index, steps on log(base_rho),
    log(time_rho) and (stage two) the logits, expansion along successful moves and step halving.
    ``start`` (the Gauss-Newton search's result): begin there, in stage two, with the steps times ``scale``."""
    steps = context.steps

    def evaluate(point: _Point) -> float:
        return context.evaluate(point.params(base, free_positions))[0]

    point = _Point(base.end_index, math.log(base.base_rho), math.log(base.time_rho), (0.0,) * (steps - 1))
    if start is not None:
        logits = (0.0,) * (steps - 1)
        if start.ramp is not None:
            logits = logits_from_ramp(start.ramp)
        point = _Point(start.end_index, math.log(start.base_rho), math.log(start.time_rho), logits)
    best = evaluate(point)
    log_rho = tuple(math.log(v) for v in RHO_RANGE)
    log_time_rho = tuple(math.log(v) for v in TIME_RHO_RANGE)

    def moved(p: _Point, coordinate: str, delta: float) -> _Point | None:
        if coordinate == "end_index":
            k = p.end_index + int(delta)
            return replace(p, end_index=k) if 1 <= k <= base.base_steps - 1 else None
        if coordinate == "base_rho":
            value = bounded(p.log_base_rho + delta, *log_rho)
            return replace(p, log_base_rho=value) if value != p.log_base_rho else None
        if coordinate == "time_rho":
            value = bounded(p.log_time_rho + delta, *log_time_rho)
            return replace(p, log_time_rho=value) if value != p.log_time_rho else None
        i = int(coordinate.split(":")[1])
        logits = list(p.logits)
        value = bounded(logits[i] + delta, -LOGIT_LIMIT, LOGIT_LIMIT)
        if value == logits[i]:
            return None
        logits[i] = value
        return replace(p, logits=tuple(logits))

    def kind(coordinate: str) -> str:
        return coordinate.split(":")[0]

    step = {k: v * scale for k, v in INITIAL_STEP.items()}
    coordinates = ["end_index", "base_rho", "time_rho"]
    stage_two = not free_positions
    if start is not None and free_positions:
        stage_two = True
        coordinates += [f"ramp:{i}" for i in range(steps - 1)]
    while True:
        improved = False
        for coordinate in coordinates:
            for sign in (1.0, -1.0):
                delta = sign * (1.0 if coordinate == "end_index" else step[kind(coordinate)])
                candidate = moved(point, coordinate, delta)
                while candidate is not None:
                    if context.exhausted():
                        return
                    value = evaluate(candidate)
                    if not value < best * (1.0 - 1e-9):
                        break
                    point, best, improved = candidate, value, True
                    candidate = moved(point, coordinate, delta)  # keep going while it pays
                if improved:
                    break
        if improved:
            continue
        if all(step[k] <= FINAL_STEP[k] for k in ("base_rho", "time_rho")) and \
                (not stage_two or not free_positions or step["ramp"] <= FINAL_STEP["ramp"]):
            if stage_two:
                return
            # the recipe parameters have settled: free the interior positions too
            stage_two = True
            coordinates += [f"ramp:{i}" for i in range(steps - 1)]
            step = {"base_rho": INITIAL_STEP["base_rho"] / 4, "time_rho": INITIAL_STEP["time_rho"] / 4,
                    "ramp": INITIAL_STEP["ramp"]}
            continue
        step = {k: v / 2 for k, v in step.items()}
