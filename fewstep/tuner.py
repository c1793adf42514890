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

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .params import END_AT_INDEX, END_AT_ZERO, ENDS, ScheduleParams, format_params, rounded
from .recipes import recipe_for_step_count
from .search_compass import compass_search
from .search_gauss_newton import gauss_newton_search
from .solver_names import SCHEDULE_SOLVERS, UNIPC_SOLVERS
from .tuner_objective import (
    REFERENCE_STEPS,
    Measure,
    Run,
    SearchContext,
    compute_reference,
    denoiser_run,
    reference_sigmas,
    valid_schedule,
)
from .unipc import resolve_order

# the tuner's face: nodes/tuning.py, benchmarks/ and tests/test_sampleable.py import these from here
__all__ = ["AUTO", "END_CHOICES", "METHODS", "REFERENCE_STEPS", "Run", "SOLVER_CHOICES", "TuneResult",
           "compute_reference", "denoiser_run", "solver_configs", "solver_label", "tune", "valid_schedule",
           "with_solver"]

METHODS = ("gauss_newton", "pattern")
AUTO = "auto"  # solver: try the pack's solvers and their UniPC options; end: try both ends
SOLVER_CHOICES = (AUTO, *SCHEDULE_SOLVERS)  # the tuner node's ``solver`` values
END_CHOICES = (AUTO, *ENDS)
UNIPC_ORDERS = ("auto", "2")
WARM_UP = 15
FIRST_SEARCH = 60  # candidates of the first search when the solver or the end is chosen (the runners-up follow)
RUNNERS_UP = 2  # the next best choices (solver option and end) on the starting schedule, each searched from there ...
RUNNER_UP_SEARCH = 60  # ... for this many candidates, before the race
RACE_SIZE = 3  # choices (solver option and end) searched in turn after the runners-up
RACE_SHARE = 0.6  # the share of the candidates left that the race takes; the final search has the rest


@dataclass
class TuneResult:
    """The best schedule found and how the search went."""

    params: ScheduleParams  # with the solver (and its UniPC variant / order with solver=auto) and the end chosen
    text: str  # format_params(params): paste into Few-Step Sigmas' or Few-Step KSampler's `params`
    sigmas: torch.Tensor
    objective: float  # distance of x_N to the reference at sigma 0 (mean per-probe RMS)
    start_objective: float  # the same for the starting recipe (its solver; the paper's early stop)
    candidates: int  # schedules evaluated (the starting one included)
    model_evaluations: int  # the reference's included when it was computed for this run
    seconds: float
    stopped_by: str  # "converged", "time budget" or "candidate limit"
    history: list[tuple[int, float]] = field(default_factory=list)  # (candidates, best objective) at improvements
    ends: dict[str, float] = field(default_factory=dict)  # end ("index", "0") -> best objective seen with it
    solvers: dict[str, float] = field(default_factory=dict)  # solver_label -> best objective seen with it
    learned: str = ""  # with ``learn`` (tuner_learn.py): its one-line report; the text is then the learned one


def solver_configs(solver: str, steps: int) -> list[tuple[str, str | None, str | None]]:
    """(solver, variant, order) the tuner tries for ``solver``: itself as the recipes run it (variant and order
    unset), or with ``auto`` DPM++1S, DPM++2M and UniPC with and without the analytical first step, bh1 / bh2,
    order auto / 2 (one of the two when they are the same order for ``steps``)."""
    if solver != AUTO:
        return [(solver, None, None)]
    configs: list[tuple[str, str | None, str | None]] = [("dpmpp_1s", None, None), ("dpmpp_2m", None, None)]
    orders = [order for i, order in enumerate(UNIPC_ORDERS)
              if resolve_order(order, steps) not in [resolve_order(o, steps) for o in UNIPC_ORDERS[:i]]]
    for name in UNIPC_SOLVERS:
        configs += [(name, variant, order) for variant in ("bh1", "bh2") for order in orders]
    return configs


def with_solver(params: ScheduleParams, name: str, variant: str | None, order: str | None) -> ScheduleParams:
    """``params`` with one of ``solver_configs``' options (a UniPC solver's variant unset: bh1, as it samples)."""
    return replace(params, solver=name, variant=variant or ("bh1" if name in UNIPC_SOLVERS else None), order=order)


def solver_label(params: ScheduleParams) -> str:
    """``solver`` (``variant`` ``order ...``) of a candidate, as the report names it."""
    extra = [v for v in (params.variant, params.order and f"order {params.order}") if v]
    return " ".join([params.solver or "recipe", *extra])


def tune(run: Run, sigma_table: torch.Tensor, steps: int, solver: str, *, start: ScheduleParams | None = None,
         time_budget: float = 60.0, reference_steps: int = REFERENCE_STEPS, free_positions: bool = True,
         max_candidates: int | None = None, progress: Callable[[int, float], None] | None = None,
         check_interrupt: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
         method: str = "gauss_newton", reference: torch.Tensor | None = None, end: str = AUTO,
         measure: Measure | None = None) -> TuneResult:
    """Search the schedule of ``steps`` evaluations for ``solver`` that brings x_N closest to the reference.

    ``run(sigmas, solver)`` solves from the probe noises (batched) and returns the latent at sigmas[-1]
    (``solver``: a ``plan.Solver``, or a name for the reference); ``start`` defaults to the paper's recipe
    family for ``steps`` (``recipe_for_step_count``).
    ``solver``: one of SCHEDULE_SOLVERS, or ``auto``: every one of ``solver_configs`` is screened on the start and
    the best searched, within the same candidates. ``end``: ``auto`` (default) screens the paper's early stop
    (``index``) and ``0`` (the same evaluations, the last step to sigma 0) and searches the better; ``index`` or
    ``0`` only that one (the start is still measured with the early stop: ``start_objective``; the result keeps
    the end named). The result's ``ends`` and ``solvers`` give the best distance seen with each.
    ``measure``: what the distance compares (default the latent; e.g. decoded images).
    ``method``: "gauss_newton" (default, see ``search_gauss_newton``) or "pattern" (the compass search of
    versions up to 0.5, kept for comparison: ``benchmarks/tuner_search.py``).
    ``reference``: the reference solution if already computed (``compute_reference``) for the same probes;
    otherwise it is computed here (``reference_steps`` evaluations, counted in ``model_evaluations``).
    ``progress(candidates evaluated, best objective so far)`` is called after each candidate;
    ``check_interrupt()`` before each solver run (it raises to abort). The time budget includes the reference.
    """
    if solver not in SOLVER_CHOICES:
        raise ValueError(f"solver = {solver!r} is not one of {list(SOLVER_CHOICES)}")
    if steps < 1:
        raise ValueError(f"steps = {steps} must be at least 1")
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not one of {list(METHODS)}")
    if end not in END_CHOICES:
        raise ValueError(f"end = {end!r} is not one of {list(END_CHOICES)}")
    began = clock()
    base = start or ScheduleParams.from_recipe(recipe_for_step_count(steps))
    recipe_solver = recipe_for_step_count(steps).solver if solver == AUTO else solver
    base = replace(base, steps=steps, solver=recipe_solver, variant=None, order=None, end=END_AT_INDEX, ramp=None)
    if free_positions and steps < 2:
        free_positions = False
    context = SearchContext(run, sigma_table, steps, reference, time_budget, max_candidates, progress,
                            check_interrupt, clock, began, measure)
    if reference is None:
        context.set_reference(context.solve(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m"))
    start = base  # the recipe with its (or the named) solver and the early stop
    start_text = format_params(rounded(base))
    base = _screen(context, base, solver, end)
    if method == "pattern":
        compass_search(context, base, free_positions)
    else:
        cap = context.max_candidates
        if (solver == AUTO or end == AUTO) and cap is not None:
            # the screened choice first, as far as FIRST_SEARCH candidates; then the runners-up of the screen, each
            # from the starting schedule; then every choice at the best schedule found, the best RACE_SIZE of them
            # searched in turn (the race); the final search from the best of all. Whatever the cap: the first c
            # candidates of a search capped at c are those of the same search with a higher cap
            # (benchmarks/tuner_search.py measures the schedule held after c candidates so)
            _search_until(context, base, free_positions, FIRST_SEARCH)
            if not context.exhausted():
                _runners_up(context, start, base, solver, end, free_positions)
            if not context.exhausted():
                base = _race(context, solver, end, free_positions)
        gauss_newton_search(context, base, free_positions)
        if context.stopped_by == "converged":
            # no step of the local model pays any more: polish with the compass search's moves from the best
            # schedule, with a quarter of its first steps, while the budget lasts
            best = context.best_of(lambda params: _same_choice(params, base))[1]
            compass_search(context, base, free_positions, start=best, scale=0.25)
    start_value = context.seen[start_text][0]  # the screen evaluates it first
    allowed = _ends(end)  # the start (early stop) is measured whatever ``end`` says
    value, params, sigmas = context.best_of(lambda params: params.end in allowed)
    if progress is not None:
        progress(len(context.seen), value)
    ends = {e: _best_value(context, lambda p, e=e: p.end == e) for e in ENDS}
    solvers: dict[str, float] = {}
    for seen_value, seen_params, _ in context.seen.values():
        label = solver_label(seen_params)
        solvers[label] = min(solvers.get(label, math.inf), seen_value)
    return TuneResult(params, format_params(params), sigmas, value, start_value, len(context.seen),
                      context.evaluations, clock() - began, context.stopped_by, context.history, ends, solvers)


def _ends(end: str) -> tuple[str, ...]:
    """The ends a result may have: both with ``end`` auto, else the one named."""
    return ENDS if end == AUTO else (end,)


def _same_choice(params: ScheduleParams, base: ScheduleParams) -> bool:
    return (params.solver, params.variant, params.order, params.end) == (base.solver, base.variant, base.order,
                                                                        base.end)


def _best_value(context: SearchContext, keep) -> float:
    best = context.best_of(keep)
    return math.inf if best is None else best[0]


def _screen(context: SearchContext, base: ScheduleParams, solver: str, end: str) -> ScheduleParams:
    """The start of the search: ``base`` (the recipe, its solver, the early stop) with the end and solver options
    that score best on the starting schedule. Screened in this order, each candidate once: the start with the
    early stop; with ``end`` auto the same with the last step to 0; with ``solver`` auto every other solver of
    ``solver_configs`` at the better end. The search then refines the schedule for that choice."""
    context.evaluate(rounded(base))
    if end != END_AT_INDEX:
        zero = replace(base, end=END_AT_ZERO)
        if end == END_AT_ZERO or not context.exhausted():
            context.evaluate(rounded(zero))
        if end == END_AT_ZERO or _value(context, zero) < _value(context, base):
            base = zero
    if solver == AUTO:
        for name, variant, order in solver_configs(solver, base.steps):
            if context.exhausted():
                break
            context.evaluate(rounded(with_solver(base, name, variant, order)))
        base = context.best_of(lambda params: params.end == base.end)[1]  # only the start's schedule seen so far
    return base


def _choices(base: ScheduleParams, solver: str, end: str) -> list[ScheduleParams]:
    """``base``'s schedule with every solver option and end that ``solver`` / ``end`` allow, rounded."""
    configs = solver_configs(AUTO, base.steps) if solver == AUTO else [(base.solver, base.variant, base.order)]
    ends = _ends(end)
    return [rounded(replace(with_solver(base, name, variant, order) if solver == AUTO else base, end=which))
            for which in ends for name, variant, order in configs]


def _runners_up(context: SearchContext, start: ScheduleParams, searched: ScheduleParams, solver: str, end: str,
                free_positions: bool) -> None:
    """Every choice on the starting schedule (the screen ran those at one end; here the other end too), and the
    RUNNERS_UP best of them but the one the first search took, each searched from the starting schedule for
    RUNNER_UP_SEARCH candidates. The objective has many basins (ComfyUI's rounded timesteps, probes that change
    mode): a choice searched from the schedule another solver was tuned for often stays worse than the same choice
    searched from the start (photo_eps, N = 5: UniPC 0.055 from DPM++2M's schedule, 0.042 from the recipe;
    benchmarks/tuner_gap.py)."""
    choices = []
    for params in _choices(start, solver, end):
        if context.exhausted():
            return
        choices.append((context.evaluate(params)[0], params))
    others = [item for item in choices if not _same_choice(item[1], searched)]
    for _, params in sorted(others, key=lambda item: item[0])[:RUNNERS_UP]:
        if context.exhausted():
            return
        _search_until(context, params, free_positions, len(context.seen) + RUNNER_UP_SEARCH)


def _race(context: SearchContext, solver: str, end: str, free_positions: bool) -> ScheduleParams:
    """Every solver option and end that ``solver`` / ``end`` allow, at the best schedule so far; the RACE_SIZE best
    of them each searched for an equal part of RACE_SHARE of the candidates left. Returns the best seen."""
    ends = _ends(end)

    def allowed(params: ScheduleParams) -> bool:
        return params.end in ends

    best = context.best_of(allowed)[1]
    configs = solver_configs(AUTO, best.steps) if solver == AUTO else [(best.solver, best.variant, best.order)]
    choices = []
    for name, variant, order in configs:
        for which in ends:
            if context.exhausted():
                return context.best_of(allowed)[1]
            params = rounded(replace(with_solver(best, name, variant, order), end=which))
            choices.append((context.evaluate(params)[0], params))
    leaders = [params for _, params in sorted(choices, key=lambda item: item[0])[:RACE_SIZE]]
    each = int(RACE_SHARE * (context.max_candidates - len(context.seen)) / len(leaders))
    for params in leaders:
        if each < 1:
            break
        _search_until(context, params, free_positions, len(context.seen) + each)
    return context.best_of(allowed)[1]


def _search_until(context: SearchContext, base: ScheduleParams, free_positions: bool, limit: int) -> None:
    """The Gauss-Newton search from ``base`` held to ``limit`` candidates in all (the context's own cap and time
    budget still apply); reaching ``limit`` does not end the tuning, so the context may search on afterwards."""
    cap = context.max_candidates
    context.max_candidates = min(cap, limit)
    gauss_newton_search(context, base, free_positions)
    context.max_candidates = cap
    if context.stopped_by == "candidate limit":
        context.stopped_by = "converged"  # exhausted() looks again against the context's own cap


def _value(context: SearchContext, params: ScheduleParams) -> float:
    entry = context.seen.get(format_params(rounded(params)))
    return math.inf if entry is None else entry[0]
