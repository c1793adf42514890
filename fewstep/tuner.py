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
so every candidate is a valid schedule). Two searches over it, both deterministic, both stopping when
converged, at the time budget or at a candidate limit, and returning the best schedule seen, rounded
to its text form (``params.py``):

- "gauss_newton" (the default; ``_gauss_newton``): the end as one continuous coordinate, a
  Levenberg-Marquardt search on the probes' residuals with a finite-difference Jacobian kept up to
  date by Broyden's rule (one candidate per step), in two stages (the end, then everything) with a
  line search on time_rho between them (doubling steps while they pay), and, when stage two stalls, one
  jump to the same end with the steps on the Karras spacing (taken if it gains 5 %), else line searches
  on the end and each logit. On the quality benchmark's analytic models it removes 90 % of what the
  pattern search removes at convergence within 30 candidates in every case (docs/tuner_search.md), on
  the same models drawn with other seeds in most, not all.
- "pattern" (versions up to 0.5): a compass search on log(base_rho), log(time_rho) and the logits,
  +-1 on end_index, with expansion along successful moves and step halving; hundreds to thousands of
  candidates to converge. Kept for comparison.

The reference does not depend on the solver or step count: ``compute_reference`` once, and pass it to
each ``tune`` on the same probes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .params import ScheduleParams, format_params, rounded
from .recipes import RHO_RANGE, TIME_RHO_RANGE, recipe_for_step_count
from .schedule import (STANDARD_TABLE, check_ramp, continuous_timestep, fewstep_timesteps, karras_sigmas,
                       schedule_problem)
from .solvers import SCHEDULE_SOLVERS, sample_solver

REFERENCE_STEPS = 40
LOGIT_LIMIT = 3.0  # increments stay within a factor e^6 of each other: none collapses
INITIAL_STEP = {"base_rho": 0.25, "time_rho": 0.15, "ramp": 0.4}  # in log / logit units
FINAL_STEP = {"base_rho": 0.004, "time_rho": 0.004, "ramp": 0.01}
METHODS = ("gauss_newton", "pattern")
FD_STEP = 0.06  # finite-difference step of the Gauss-Newton search, in log-sigma / logit units
MAX_MOVE = 1.0  # the most a Gauss-Newton step moves one coordinate
INITIAL_MOVE = 0.5  # ... at first, and after a fresh Jacobian
MIN_MOVE = 1e-3  # steps shorter than this do not count: take a fresh Jacobian, or stop
RELATIVE_TOLERANCE = 1e-4  # a step that lowers the objective by less, on a fresh Jacobian: converged
STAGE_ONE_TOLERANCE = 1e-3  # the same for the first stage (the end only)
LINE_STEP = 0.15  # first step of the line searches (time_rho between the stages, each coordinate at a stall), doubled
STALL_CANDIDATES = 5  # stage two has stalled when this many candidates in a row lowered the objective ...
STALL_GAIN = 0.01  # ... by less than this share together: line searches on the end and each logit, one at a time
KARRAS_RHO = 7.0  # the first stall also tries the same end with the steps on ComfyUI's Karras spacing (rho 7) ...
JUMP_GAIN = 0.05  # ... and moves there only if that lowers the objective by at least this share

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
    model_evaluations: int  # the reference's included when it was computed for this run
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
        return rounded(replace(base, end_index=self.end_index, base_rho=math.exp(self.log_base_rho),
                               time_rho=math.exp(self.log_time_rho),
                               ramp=_ramp(self.logits) if free_positions else None))


def _ramp(logits) -> tuple[float, ...] | None:
    """The interior positions (``ScheduleParams.ramp``) of N increments with softmax logits (0, *logits);
    None (even spacing) when every logit is 0."""
    if not any(logits):
        return None
    weights = torch.tensor((0.0, *logits), dtype=torch.float64).softmax(0)
    return tuple(weights.cumsum(0)[:-1].tolist())


def _logits(ramp: tuple[float, ...]) -> tuple[float, ...]:
    """The N-1 logits (within +-LOGIT_LIMIT) of the increments of interior positions ``ramp``: ``_ramp``'s inverse."""
    increments = [b - a for a, b in zip((0.0, *ramp), (*ramp, 1.0))]
    return tuple(_bounded(math.log(v / increments[0]), -LOGIT_LIMIT, LOGIT_LIMIT) for v in increments[1:])


def _bounded(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class _Context:
    """What both searches share: the run, the reference, the schedules evaluated so far and the limits."""

    def __init__(self, run: Run, sigma_table: torch.Tensor, steps: int, solver: str, reference: torch.Tensor,
                 time_budget: float, max_candidates: int | None, progress, check_interrupt, clock, began: float):
        self.run, self.sigma_table, self.steps, self.solver = run, sigma_table, steps, solver
        self.reference = reference
        self.time_budget, self.max_candidates = time_budget, max_candidates
        self.progress, self.check_interrupt, self.clock, self.began = progress, check_interrupt, clock, began
        self.seen: dict[str, tuple[float, ScheduleParams, torch.Tensor]] = {}
        self.evaluations = 0
        self.longest = 0.0  # the longest candidate so far: the time budget stops before one would overrun it
        self.best = math.inf
        self.history: list[tuple[int, float]] = []
        self.stopped_by = "converged"

    def solve(self, sigmas: torch.Tensor, which: str) -> torch.Tensor:
        if self.check_interrupt is not None:
            self.check_interrupt()
        self.evaluations += len(sigmas) - 1
        return self.run(sigmas, which)

    def exhausted(self) -> bool:
        """True (and ``stopped_by`` says why) when no further candidate may be evaluated."""
        if self.stopped_by != "converged":
            return True
        if self.clock() - self.began + self.longest > self.time_budget:
            self.stopped_by = "time budget"
        elif self.max_candidates is not None and len(self.seen) >= self.max_candidates:
            self.stopped_by = "candidate limit"
        return self.stopped_by != "converged"

    def evaluate(self, params: ScheduleParams) -> tuple[float, torch.Tensor | None]:
        """(objective, residual x_N - reference as (probes, elements) float32, None when not computed now)."""
        text = format_params(params)
        if text in self.seen:
            return self.seen[text][0], None
        sigmas = params.sigmas(self.sigma_table)
        residual = None
        if valid_schedule(sigmas, self.steps):
            tick = self.clock()
            x = self.solve(sigmas, self.solver)
            self.longest = max(self.longest, self.clock() - tick)
            value = distance(x, self.reference)
            residual = (x.detach().float() - self.reference.detach().float()).reshape(x.shape[0], -1)
        else:
            value = math.inf
        value = value if math.isfinite(value) else math.inf
        self.seen[text] = (value, params, sigmas)
        if value < self.best:
            self.best = value
            self.history.append((len(self.seen), value))
        if self.progress is not None:
            self.progress(len(self.seen), self.best)
        return value, residual


def compute_reference(run: Run, sigma_table: torch.Tensor, reference_steps: int = REFERENCE_STEPS) -> torch.Tensor:
    """The tuner's reference: ``reference_steps`` evaluations of DPM++2M to sigma 0 from the probe noises
    (``reference_sigmas``). It depends on the model, conds, guidance, probes and sigma table only, not on the
    solver or step count being tuned: compute it once and pass it to ``tune(reference=...)`` for each."""
    with torch.no_grad():
        return run(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m")


def tune(run: Run, sigma_table: torch.Tensor, steps: int, solver: str, *, start: ScheduleParams | None = None,
         time_budget: float = 60.0, reference_steps: int = REFERENCE_STEPS, free_positions: bool = True,
         max_candidates: int | None = None, progress: Callable[[int, float], None] | None = None,
         check_interrupt: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
         method: str = "gauss_newton", reference: torch.Tensor | None = None) -> TuneResult:
    """Search the schedule of ``steps`` evaluations for ``solver`` that brings x_N closest to the reference.

    ``run(sigmas, solver)`` solves from the probe noises (batched) and returns the latent at sigmas[-1];
    ``start`` defaults to the paper's recipe family for ``steps`` (``recipe_for_step_count``).
    ``method``: "gauss_newton" (default, see ``_gauss_newton``) or "pattern" (the compass search of
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
    context = _Context(run, sigma_table, steps, solver, reference, time_budget, max_candidates, progress,
                       check_interrupt, clock, began)
    if reference is None:
        context.reference = context.solve(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m")
    if method == "pattern":
        _pattern(context, base, free_positions)
    else:
        _gauss_newton(context, base, free_positions)
        if context.stopped_by == "converged":
            # no step of the local model pays any more: polish with the compass search's moves from the best
            # schedule, with a quarter of its first steps, while the budget lasts
            best = min(context.seen.values(), key=lambda item: item[0])[1]
            _pattern(context, base, free_positions, start=best, scale=0.25)
    start_value = context.seen[format_params(rounded(base))][0]  # both searches evaluate the start first
    value, params, sigmas = min(context.seen.values(), key=lambda item: item[0])
    if progress is not None:
        progress(len(context.seen), value)
    return TuneResult(params, format_params(params), sigmas, value, start_value, len(context.seen),
                      context.evaluations, clock() - began, context.stopped_by, context.history)


def _karras_logits(params: ScheduleParams, sigma_table: torch.Tensor,
                   rho: float = KARRAS_RHO) -> tuple[float, ...] | None:
    """The N-1 logits (``_ramp``) that put the interior steps of ``params`` (same end, same time_rho) where a Karras
    spacing with ``rho`` between the schedule's first and last sigma has them; None if that is not a valid ramp.
    The steps land on the Karras sigmas up to the table's interpolation (log-sigma here, alphas_cumprod in
    ``sigma_at_timestep``) and the logit bounds."""
    sigmas = params.sigmas(sigma_table).to(torch.float64)
    target = karras_sigmas(params.steps + 1, float(sigmas[-1]), float(sigmas[0]), rho)
    timesteps = continuous_timestep(target[1:-1], sigma_table).tolist()
    ends = fewstep_timesteps(params.steps, params.base_steps, params.base_rho, params.end_index, params.time_rho)
    first, last = (float(ends[i]) ** (1.0 / params.time_rho) for i in (0, -1))
    ramp = tuple((first - t ** (1.0 / params.time_rho)) / (first - last) for t in timesteps)
    if check_ramp(ramp, params.steps) is not None:
        return None
    return _logits(ramp)


def _pattern(context: _Context, base: ScheduleParams, free_positions: bool, start: ScheduleParams | None = None,
             scale: float = 1.0) -> None:
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
            logits = _logits(start.ramp)
        point = _Point(start.end_index, math.log(start.base_rho), math.log(start.time_rho), logits)
    best = evaluate(point)
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


class _EndPoint:
    """The schedule's end as one continuous coordinate, log(sigma_end), instead of the pair (end_index, base_rho).

    In the recipe, base_rho and end_index only set t_end: the timestep of base sigma k of a Karras list of
    base_steps sigmas (``fewstep_timesteps``). For k = 1 .. base_steps - 2 and base_rho over its range these
    intervals of sigma overlap and cover one interval; k = base_steps - 1 is sigma_min whatever base_rho
    (the "end at sigma_min" option, outside the interval, tried separately). Base sigma k decreases
    strictly with base_rho (a power mean of sigma_max and sigma_min with exponent 1 / rho), so base_rho
    is found by bisection for the end_index wanted.
    """

    def __init__(self, base_steps: int):
        self.n = base_steps
        self.sigma_min, self.sigma_max = float(STANDARD_TABLE[0]), float(STANDARD_TABLE[-1])
        self.rho_low, self.rho_high = RHO_RANGE
        self.continuous = base_steps >= 3
        if self.continuous:
            self.bounds = (self.log_sigma(base_steps - 2, self.rho_high), self.log_sigma(1, self.rho_low))

    def log_sigma(self, k: int, rho: float) -> float:
        """log of base sigma k: karras_sigmas(n, sigma_min, sigma_max, rho)[k]."""
        high, low = self.sigma_max ** (1.0 / rho), self.sigma_min ** (1.0 / rho)
        return rho * math.log(high + k / (self.n - 1) * (low - high))

    def of(self, log_sigma: float, prefer: int) -> tuple[int, float]:
        """(end_index, base_rho) whose base sigma is exp(log_sigma), end_index as close to ``prefer`` as it can."""
        for k in sorted(range(1, self.n - 1), key=lambda k: (abs(k - prefer), k)):
            if self.log_sigma(k, self.rho_high) <= log_sigma <= self.log_sigma(k, self.rho_low):
                low, high = math.log(self.rho_low), math.log(self.rho_high)
                for _ in range(80):
                    middle = 0.5 * (low + high)
                    if self.log_sigma(k, math.exp(middle)) > log_sigma:
                        low = middle
                    else:
                        high = middle
                return k, math.exp(0.5 * (low + high))
        raise ValueError(f"log sigma_end {log_sigma} outside {self.bounds}")


def _gauss_newton(context: _Context, base: ScheduleParams, free_positions: bool) -> None:
    """A Levenberg-Marquardt search on the residuals r_p = x_N - reference of the P probes (M elements each),
    with a finite-difference Jacobian updated by Broyden's rule, for the objective f = mean_p |r_p| / sqrt(M).

    Coordinates: log(sigma_end) (``_EndPoint``: the schedule's end, continuous), log(time_rho) and the N-1
    logits of the interior positions. Stage one moves the end alone (one coordinate; on the analytic models
    the end holds much of the gain, and moving the rest first led into worse basins), then a line search
    moves log(time_rho) alone (``line_search``: steps of 0.15, doubled while they pay), stage two all. When stage
    two stalls (STALL_CANDIDATES candidates in a row gain less than STALL_GAIN together), ``unstall`` runs line
    searches on the end and on each logit, one at a time; it runs again at the next stall only if it moved.
    At the first stall it first tries one jump (``_karras_logits``): the same end and time_rho with the steps
    moved to the Karras spacing (rho 7) between the schedule's first and last sigma, ComfyUI's standard
    few-step schedule. The objective has steps (probes that change mixture component, on a real model
    composition), so the search can stall on a level a local move cannot leave; the Karras spacing often lies
    on a lower one. It is taken only if it gains JUMP_GAIN (5 %): a smaller gain may be a level that leads
    lower more slowly than the one the search is on (measured in benchmarks/tuner_search.py, seeds 0-3).
    The model of f is exact for residuals linear in the coordinates: with b_p = J_p^T r_p and
    w_p = 1 / (P sqrt(M) |r_p|), gradient sum_p w_p b_p and matrix sum_p w_p (J_p^T J_p - b_p b_p^T / |r_p|^2)
    (a mean of norms, not of squares: the plain Gauss-Newton matrix over-estimates the curvature along
    r_p when the residuals stay large, as they do here, and its steps stall). Steps are damped
    (Levenberg-Marquardt) and bounded in the max norm (a trust region that doubles when the model holds
    and shrinks to the minimum of a parabola through the failed step). Each trial step is one candidate;
    its residual also updates the Jacobian (Broyden), so a fresh finite-difference Jacobian (one candidate
    per coordinate) is only taken when the updated one stops giving progress. The end at sigma_min
    (end_index = base_steps - 1) is tried when log(sigma_end) is pushed against its lower bound, and
    searched from once more if the search converged there. Stops when, on a fresh Jacobian, no step
    lowers the objective by a relative 1e-4 (1e-3 in stage one).
    """
    steps = context.steps
    end = _EndPoint(base.base_steps)
    at_minimum = base.end_index == base.base_steps - 1 or not end.continuous
    started_at_minimum = at_minimum
    prefer = min(base.end_index, base.base_steps - 2)
    logit_count = steps - 1 if free_positions else 0
    log_time_rho = tuple(math.log(v) for v in TIME_RHO_RANGE)
    stage_one = True  # the end alone first

    def frozen_of(z: list[float]) -> set[int]:
        """The coordinates stage one holds: all but the end (none when the end is at sigma_min)."""
        return set(range(1, len(z))) if stage_one and not at_minimum else set()

    def bounds() -> list[tuple[float, float]]:
        return ([] if at_minimum else [end.bounds]) + [log_time_rho] + [(-LOGIT_LIMIT, LOGIT_LIMIT)] * logit_count

    def params_of(z: list[float]) -> ScheduleParams:
        if at_minimum:
            k, rho, rest = base.base_steps - 1, base.base_rho, z
        else:
            k, rho = end.of(z[0], prefer)
            rest = z[1:]
        return rounded(replace(base, end_index=k, base_rho=rho, time_rho=math.exp(rest[0]), ramp=_ramp(rest[1:])))

    def clipped(z: list[float]) -> list[float]:
        return [_bounded(v, low, high) for v, (low, high) in zip(z, bounds())]

    start = ([] if at_minimum else [end.log_sigma(base.end_index, base.base_rho)]) + \
        [math.log(base.time_rho)] + [0.0] * logit_count
    z = clipped(start)
    value, residual = context.evaluate(rounded(base))
    if residual is None:  # the start is not a valid schedule (a custom start): nothing to model
        return
    jacobian = torch.zeros((len(z), residual.numel()), dtype=residual.dtype, device=residual.device)
    fresh = False  # the Jacobian was taken by finite differences at z (no move since)
    damping = 1e-3
    radius = INITIAL_MOVE  # the most a step may move one coordinate now (a trust region in the max norm)
    tried_minimum = False
    searched_minimum = False
    stall_searches = True  # unstall() may run (again)
    need = [i for i in range(len(z)) if i not in frozen_of(z)]  # columns to (re)take
    if context.exhausted():
        return

    def finite_differences(columns: list[int]) -> bool:
        """Fresh columns of the Jacobian at z (one candidate each); z moves to the best of them if it is better.
        False: out of time or candidates."""
        nonlocal jacobian, fresh, z, value, residual, tried_minimum
        best_move = None
        limits = bounds()
        for i in columns:
            low, high = limits[i]
            for h in ((FD_STEP, -FD_STEP) if z[i] + FD_STEP <= high else (-FD_STEP,)):
                if not low <= z[i] + h <= high:
                    continue
                if context.exhausted():
                    return False
                trial = list(z)
                trial[i] += h
                trial_value, trial_residual = context.evaluate(params_of(trial))
                if trial_residual is not None:  # else invalid, or the same rounded schedule: the other side
                    jacobian[i] = (trial_residual.reshape(-1) - residual.reshape(-1)) / h
                    if trial_value < value and (best_move is None or trial_value < best_move[1]):
                        best_move = (trial, trial_value, trial_residual)
                    break
            else:
                jacobian[i] = 0.0
        fresh, tried_minimum = True, False
        if best_move is not None:
            z, value, residual = best_move
        return True

    def line_search(direction: list[float], signs: tuple[float, float] = (-1.0, 1.0)) -> bool:
        """z along ``direction``: a step of LINE_STEP with signs[0] (then, if that did not pay, signs[1]), doubled
        while it pays. True when z moved. The local model cannot see this far: on the spheres model the best
        time_rho is about 0.4 from the recipe's 1.0+, the finite differences at the start are nearly flat; on
        the clustered model the objective has steps (probes that land on another narrow component)."""
        nonlocal z, value, residual, fresh
        for sign in signs:
            step, moved = sign * LINE_STEP, False
            while not context.exhausted():
                trial = clipped([v + step * d for v, d in zip(z, direction)])
                if trial == z:
                    break
                trial_value, trial_residual = context.evaluate(params_of(trial))
                if trial_residual is None or not trial_value < value:
                    break
                z, value, residual, moved, fresh = trial, trial_value, trial_residual, True, False
                step *= 2.0
            if moved:
                return True
        return False

    def axis(i: int) -> list[float]:
        return [1.0 if j == i else 0.0 for j in range(len(z))]

    def unstall() -> bool:
        """Stage two stalled: at the first stall the Karras jump (taken if it gains JUMP_GAIN), else line searches
        on the end (if it is continuous) and on each logit, one after the other, each first in the descent
        direction of the last model. True when z moved."""
        nonlocal z, value, residual, fresh, jumped
        moved = False
        time_rho_index = 0 if at_minimum else 1
        if logit_count and not jumped and not context.exhausted():
            jumped = True
            logits = _karras_logits(params_of(z), context.sigma_table)
            if logits is not None:
                trial = clipped(z[:time_rho_index + 1] + list(logits))
                trial_value, trial_residual = context.evaluate(params_of(trial))
                if trial_residual is not None and trial_value < value * (1.0 - JUMP_GAIN):
                    z, value, residual, fresh = trial, trial_value, trial_residual, False
                    return True
        for i in range(len(z)):
            if i == time_rho_index or context.exhausted():
                continue
            up_first = gradient is not None and len(gradient) == len(z) and float(gradient[i]) < 0
            moved = line_search(axis(i), (1.0, -1.0) if up_first else (-1.0, 1.0)) or moved
        return moved

    def next_stage() -> bool:
        """At convergence: free the positions after stage one, or search once more from the end at sigma_min
        when log(sigma_end) converged at its lower bound. False: done."""
        nonlocal stage_one, at_minimum, z, value, residual, jacobian, damping, need, searched_minimum, radius
        if stage_one:
            # the columns stage one never took: all when it ended by moving the end to sigma_min (the end's column
            # went with it), else all but the end's, which is fresh unless the line search moves z
            held = list(range(len(z))) if at_minimum and not started_at_minimum else sorted(frozen_of(z))
            stage_one, damping, radius = False, 1e-3, INITIAL_MOVE
            need = list(range(len(z))) if line_search(axis(0 if at_minimum else 1)) else held
            return not context.exhausted()
        if at_minimum or searched_minimum or z[0] > end.bounds[0] + FD_STEP:
            return False
        searched_minimum = True
        if context.exhausted():
            return False
        at_minimum = True
        trial_value, trial_residual = context.evaluate(params_of(z[1:]))
        if trial_residual is None:
            at_minimum = False
            return False
        z, value, residual, damping, radius = z[1:], trial_value, trial_residual, 1e-3, INITIAL_MOVE
        jacobian, need = jacobian[1:].clone(), list(range(len(z)))
        return True

    gradient = None  # of the last model
    jumped = False  # the Karras jump was tried (once per search)
    stall_mark = (len(context.seen), value)  # (candidates, objective) when stage two last made STALL_GAIN
    while True:
        if not stage_one:
            if value < stall_mark[1] * (1.0 - STALL_GAIN):
                stall_mark = (len(context.seen), value)
            elif stall_searches and len(context.seen) - stall_mark[0] >= STALL_CANDIDATES:
                stall_searches = unstall()  # once more only if this one moved
                if context.exhausted():
                    return
                if stall_searches:
                    need, damping, radius = list(range(len(z))), 1e-3, INITIAL_MOVE
                stall_mark = (len(context.seen), value)
        if need:
            if not finite_differences(need):
                return
            need = []
        probes = residual.shape[0]
        rms = residual.double().pow(2).mean(1).sqrt().clamp_min(1e-12)
        weights = (1.0 / (probes * residual.shape[1] * rms)).to(residual.dtype)  # (P,)
        rows = jacobian.reshape(len(z), probes, -1)
        # Newton's matrix of the objective for residuals linear in z (a mean of norms of affine functions, convex):
        # sum_p w_p (J_p^T J_p - b_p b_p^T / |r_p|^2), b_p = J_p^T r_p; its gradient sum_p w_p b_p
        per_probe = torch.einsum("ipm,jpm->pij", rows, rows).double().cpu()
        b = torch.einsum("ipm,pm->pi", rows, residual).double().cpu()
        squared = residual.double().pow(2).sum(1).cpu().clamp_min(1e-24)
        w = weights.double().cpu()
        matrix = torch.einsum("p,pij->ij", w, per_probe - b[:, :, None] * b[:, None, :] / squared[:, None, None])
        gradient = torch.einsum("p,pi->i", w, b)
        limits = bounds()
        frozen = frozen_of(z)
        free = [i for i, (v, (low, high)) in enumerate(zip(z, limits)) if i not in frozen
                and not ((v <= low and gradient[i] > 0) or (v >= high and gradient[i] < 0))]
        if not at_minimum and not tried_minimum and 0 not in free:
            # log(sigma_end) pushed against its lower bound: the end at sigma_min, the same positions
            tried_minimum = True
            if context.exhausted():
                return
            at_minimum = True
            trial_value, trial_residual = context.evaluate(params_of(z[1:]))
            if trial_residual is not None and trial_value < value:
                z, value, residual = z[1:], trial_value, trial_residual
                jacobian, fresh = jacobian[1:].clone(), False
                if stage_one and not next_stage():  # the end settled at sigma_min: stage one is over
                    return
                continue
            at_minimum = False
        if not free:
            if fresh and not next_stage():
                return
            if not fresh:
                need = [i for i in range(len(z)) if i not in frozen]
            continue
        index = torch.tensor(free)
        sub = matrix[index][:, index]
        diagonal = sub.diagonal().clamp_min(1e-12 * float(sub.diagonal().max().clamp_min(1e-300)))
        step = torch.linalg.solve(sub + damping * torch.diag(diagonal), -gradient[index])
        if not bool(torch.isfinite(step).all()):  # a singular model: steepest descent instead
            step = -gradient[index]
        step = step * min(1.0, radius / float(step.abs().max().clamp_min(1e-300)))
        slope = float(gradient[index] @ step)
        predicted = -(slope + 0.5 * float(step @ sub @ step))
        trial = list(z)
        for i, delta in zip(free, step.tolist()):
            trial[i] += delta
        trial = clipped(trial)
        if context.exhausted():
            return
        trial_value, trial_residual = context.evaluate(params_of(trial))
        moved = torch.tensor(trial, dtype=torch.float64) - torch.tensor(z, dtype=torch.float64)
        if trial_residual is not None and float(moved.pow(2).sum()) > 0:  # Broyden: J += dz (dr - J^T dz)^T / |dz|^2
            dz = moved.to(jacobian.dtype).to(jacobian.device)
            secant = trial_residual.reshape(-1) - residual.reshape(-1) - dz @ jacobian
            jacobian = jacobian + dz[:, None] * secant[None, :] / float(moved.pow(2).sum())
        length = float(step.abs().max())
        if trial_value < value:
            gain = value - trial_value
            z, value, residual = trial, trial_value, trial_residual
            damping = max(damping / 3.0, 1e-7)
            if gain > 0.5 * predicted:  # the model holds: allow longer steps
                radius = min(MAX_MOVE, max(radius, 2.0 * length))
            tolerance = STAGE_ONE_TOLERANCE if stage_one else RELATIVE_TOLERANCE
            if gain >= tolerance * value:
                fresh = False
                continue
            if fresh and not next_stage():  # a fresh Jacobian gives only tiny gains: converged
                return
        else:
            # the step overshot: the next one is shorter, where a parabola through f(0), f'(0) and f(step)
            # has its minimum (between 0.1 and 0.5 of this step), and more damped
            curvature = trial_value - value - slope
            alpha = 0.25
            if math.isfinite(trial_value) and slope < 0 and curvature > 0:
                alpha = _bounded(-slope / (2.0 * curvature), 0.1, 0.5)
            radius = alpha * length
            damping *= 2.0
            if radius >= MIN_MOVE:
                continue
            if fresh and not next_stage():
                return
        radius, damping = INITIAL_MOVE, 1e-3
        if not need:
            need = [i for i in range(len(z)) if i not in frozen_of(z)]
