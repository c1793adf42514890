"""The schedule tuner: search a few-step schedule for one model, solver and step budget.

``tune`` evaluates candidate schedules by the objective of ``tuner_objective.py`` (the distance of the
N-step result x_N to a reference carried to sigma 0, by default 40 steps of DPM++2M, mean per-probe RMS
over a few probe noises) and returns the best one seen, rounded to its text form (``params.py``), as a ``TuneResult``.

Search space, from the paper's recipe for N: the end point (end_index k and base_rho of the base list,
which together set t_end), time_rho, and then (``free_positions``) the N-1 interior positions of the
Karras spacing in timestep space, as softmax logits of the N increments (always strictly increasing,
so every candidate is a valid schedule). Two searches over it, both deterministic, both stopping when
converged, at the time budget or at a candidate limit:

- "gauss_newton" (the default; ``search_gauss_newton.py``): a Levenberg-Marquardt search on the probes'
  residuals with the end as one continuous coordinate, a line search on time_rho and a jump to the Karras
  spacing at a stall. On the quality benchmark's analytic models it removes 90 % of what the pattern
  search removes at convergence within 30 candidates in every case (docs/tuner_search.md), on the same
  models drawn with other seeds in most, not all. When it converges, the compass search polishes its
  result with a quarter of its first steps while the budget lasts.
- "pattern" (versions up to 0.5; ``search_compass.py``): a compass search on log(base_rho), log(time_rho)
  and the logits, +-1 on end_index, with expansion along successful moves and step halving; hundreds to
  thousands of candidates to converge. Kept for comparison.

The reference does not depend on the solver or step count: ``compute_reference`` once, and pass it to
each ``tune`` on the same probes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .params import ScheduleParams, format_params, rounded
from .recipes import recipe_for_step_count
from .search_compass import compass_search
from .search_gauss_newton import gauss_newton_search
from .solvers import SCHEDULE_SOLVERS
from .tuner_objective import (
    REFERENCE_STEPS,
    Run,
    SearchContext,
    compute_reference,
    denoiser_run,
    reference_sigmas,
    valid_schedule,
)

# the tuner's face: nodes/tuning.py, benchmarks/ and tests/test_sampleable.py import these from here
__all__ = ["METHODS", "REFERENCE_STEPS", "Run", "TuneResult", "compute_reference", "denoiser_run", "tune",
           "valid_schedule"]

METHODS = ("gauss_newton", "pattern")


@dataclass
class TuneResult:
    """The best schedule found and how the search went."""

    params: ScheduleParams
    text: str  # format_params(params): paste into Few-Step Sigmas' `params`
    sigmas: torch.Tensor
    objective: float  # distance of x_N to the reference at sigma 0 (mean per-probe RMS)
    start_objective: float  # the same for the starting recipe
    candidates: int  # schedules evaluated (the starting one included)
    model_evaluations: int  # the reference's included when it was computed for this run
    seconds: float
    stopped_by: str  # "converged", "time budget" or "candidate limit"
    history: list[tuple[int, float]] = field(default_factory=list)  # (candidates, best objective) at improvements


def tune(run: Run, sigma_table: torch.Tensor, steps: int, solver: str, *, start: ScheduleParams | None = None,
         time_budget: float = 60.0, reference_steps: int = REFERENCE_STEPS, free_positions: bool = True,
         max_candidates: int | None = None, progress: Callable[[int, float], None] | None = None,
         check_interrupt: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
         method: str = "gauss_newton", reference: torch.Tensor | None = None) -> TuneResult:
    """Search the schedule of ``steps`` evaluations for ``solver`` that brings x_N closest to the reference.

    ``run(sigmas, solver)`` solves from the probe noises (batched) and returns the latent at sigmas[-1];
    ``start`` defaults to the paper's recipe family for ``steps`` (``recipe_for_step_count``).
    ``method``: "gauss_newton" (default, see ``search_gauss_newton``) or "pattern" (the compass search of
    versions up to 0.5, kept for comparison: ``benchmarks/tuner_search.py``).
    ``reference``: the reference solution if already computed (``compute_reference``) for the same probes;
    otherwise it is computed here (``reference_steps`` evaluations, counted in ``model_evaluations``).
    ``progress(candidates evaluated, best objective so far)`` is called after each candidate;
    ``check_interrupt()`` before each solver run (it raises to abort). The time budget includes the reference.
    """
    if solver not in SCHEDULE_SOLVERS:
        raise ValueError(f"solver = {solver!r} is not one of {list(SCHEDULE_SOLVERS)}")
    if steps < 1:
        raise ValueError(f"steps = {steps} must be at least 1")
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not one of {list(METHODS)}")
    began = clock()
    base = start or ScheduleParams.from_recipe(recipe_for_step_count(steps))
    base = replace(base, steps=steps, solver=solver, ramp=None)
    if free_positions and steps < 2:
        free_positions = False
    context = SearchContext(run, sigma_table, steps, solver, reference, time_budget, max_candidates, progress,
                            check_interrupt, clock, began)
    if reference is None:
        context.reference = context.solve(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m")
    if method == "pattern":
        compass_search(context, base, free_positions)
    else:
        gauss_newton_search(context, base, free_positions)
        if context.stopped_by == "converged":
            # no step of the local model pays any more: polish with the compass search's moves from the best
            # schedule, with a quarter of its first steps, while the budget lasts
            best = min(context.seen.values(), key=lambda item: item[0])[1]
            compass_search(context, base, free_positions, start=best, scale=0.25)
    start_value = context.seen[format_params(rounded(base))][0]  # both searches evaluate the start first
    value, params, sigmas = min(context.seen.values(), key=lambda item: item[0])
    if progress is not None:
        progress(len(context.seen), value)
    return TuneResult(params, format_params(params), sigmas, value, start_value, len(context.seen),
                      context.evaluations, clock() - began, context.stopped_by, context.history)
