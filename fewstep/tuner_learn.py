"""The tuner's second stage, ``learn``: fit a tuned schedule's solver weights (and model times) to the reference.

From the best schedule the search found (``tuner.tune``), the offsets of the weighted DPM++ solver
(``learned.py``: per step, on the current and up to two earlier data predictions), with ``model time`` the
per-evaluation model times, and in either mode the positions of the schedule's interior steps (shifts of the N-1
softmax logits of its ramp, the schedule search's own coordinates; its ends stay) are fitted to the same many-step
reference on the same probe noises: a Levenberg-Marquardt search on the residuals x_N - reference, its least squares
re-weighted per probe by the inverse of each probe's residual norm (so it minimises the tuner's mean per-probe
distance, not a pooled one), every trial step kept inside the fit's box (|offset| <= FIT_WEIGHT_LIMIT,
|delta| <= MODEL_TIME_LIMIT, logit shifts within RAMP_LIMIT) and taken only if the mean per-probe distance falls.
Its Jacobian, of the unweighted residuals (the weights change with every step), comes from forward differences (one
solver run per parameter; the fit moves to the best of those runs if it is better) and is then kept up to date by
Broyden's rank-one rule, J += (y - J s) s^T / s^T s for a trial step s that changed the residuals by y, so each
step costs one run; a failed trial on a fresh Jacobian leaves it as it is (the damping handles it). The differences
are taken again only when DAMPING_TRIES steps on the updated Jacobian all fail, or one gains less than TOLERANCE;
when a Jacobian and the steps after it gained less than TOLERANCE together, the differences are taken again with
steps FD_RETRY_SCALE times as long, up to FD_RETRIES times, and then the fit stops; it stops too after
``max_iterations`` Jacobians, or at the time budget. The fitted numbers are rounded to their text form and then
judged on held-out noises (as many as the probes, or more) against the schedule alone: the learned text is returned
only if it is closer to the reference there, else the schedule with a one-line reason. Its references are finer
than the search's (LEARN_REFERENCE_STEPS).

A UniPC schedule (without the analytical first step) is fitted from UniPC itself: carried from one model evaluation
to the next (the corrector's result is never evaluated; the next step starts from it, so it folds into that step),
UniPC of order 1 or 2 is a weighted multistep step on the current and two earlier data predictions, and
``equivalent_offsets`` reads those weights off the solver as offsets from DPM++2M's. Where it is not one (AFS, order
3, an offset beyond the fit's box), the fit starts from the better of DPM++1S and DPM++2M on the schedule, as for
a schedule that names a DPM++ solver, and from UniPC's offsets only where they run closer to the reference. (UniPC,
with AFS too, is the weighted solver exactly in the noise prediction, ``equivalent_offsets(..., prediction="noise")``;
starting the fit there was measured and not kept, docs/learned.md.)
Derivative-free on purpose: ComfyUI hands the network an integer timestep, so the objective is flat in a model
time below one timestep and autograd sees no slope there, and a node may run under torch's inference mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .learned import HISTORY, MODEL_TIME_LIMIT, Weights, default_weights, group_size
from .noise_forms import half_log_snr, signal_scale
from .params import ScheduleParams, format_params, rounded
from .plan import Solver, params_solver
from .sampling import sample
from .solver_names import FINISH_LAST_SIGMA, SOLVERS
from .tuner_objective import Measure, Run, distance, logits_from_ramp, ramp_from_logits, valid_schedule
from .unipc import afs_estimate, afs_schedule

LEARN_SCHEDULE = "schedule"
LEARN_WEIGHTS = "schedule+weights"
LEARN_MODEL_TIME = "schedule+weights+model time"
LEARN_CHOICES = (LEARN_SCHEDULE, LEARN_WEIGHTS, LEARN_MODEL_TIME)  # the tuner node's ``learn`` values
FIT_WEIGHT_LIMIT = 1.0  # the fit keeps each offset within this (the text allows 2): bounded steps on any noise
WEIGHT_STEP = 0.02  # forward-difference steps: offsets ...
TIME_STEP = 0.04  # ... model times (a few of the SD table's timesteps: ComfyUI rounds the timestep) ...
RAMP_STEP = 0.05  # ... and the ramp's logits
RAMP_LIMIT = 1.5  # the fit moves each of the ramp's logits by at most this
MAX_ITERATIONS = 12  # finite-difference Jacobians (Broyden steps between them are not counted)
FD_RETRIES = 2  # when a Jacobian gains too little, up to this many more with the forward-difference steps ...
FD_RETRY_SCALE = 2.0  # ... scaled by this each time (coarser differences step across ComfyUI's rounded timesteps)
DAMPING_TRIES = 4  # trial steps per iteration, the damping x10 after each that fails
TOLERANCE = 1e-3  # a relative gain below this: a fresh Jacobian, or (since the last one) the end of the fit
DAMPING = 1e-3  # initial Levenberg-Marquardt damping, relative to the diagonal of J^T J
# The fit's references (probes and held out): DPM++2M with this many evaluations (``compute_reference(run, table,
# LEARN_REFERENCE_STEPS)``), finer than the schedule search's 40. On a trained network a solution converges unevenly
# in its steps (ComfyUI hands a discrete model the nearest integer timestep: the ODE it solves is not smooth): on the
# photo_eps proxy 40 Karras steps land 0.0085 RMS from a 400-step solution (30 steps 0.0030, 100 steps 0.0014, 200
# steps 0.0007), about as far as a fit at 8 evaluations gets from its reference, so a fit to 40 steps learns their
# error. 100 and 200 steps gave fits of the same quality overall (docs/learned.md); 100 cost half.
LEARN_REFERENCE_STEPS = 100


@dataclass
class LearnResult:
    """What ``learn`` returns: the params to use (learned, or the schedule alone) and why."""

    params: ScheduleParams
    text: str
    learned: bool  # True when the learned weights / model times won on the held-out noises
    fitted: ScheduleParams  # the fitted params (rounded to their text), returned or not
    reason: str  # one line
    tuning: tuple[float, float]  # (schedule alone, learned) mean per-probe distance on the tuning probes
    held_out: tuple[float, float]  # the same on the held-out noises
    evaluations: int  # model evaluations of the fit and the held-out check (batched over the probes)
    runs: int
    seconds: float
    origin: str = ""  # where the fit started: "solver, its distance on the probes"


def _with(params: ScheduleParams, theta: list[float], model_time: bool, logits: list[float]) -> ScheduleParams:
    """``params`` with the offsets, model times and ramp logits (``logits`` shifted) of the flat vector ``theta``."""
    groups, k = [], 0
    for i in range(params.steps + params.afs):
        size = group_size(i)
        groups.append(tuple(theta[k:k + size]))
        k += size
    times = tuple(theta[k:k + params.steps]) if model_time else None
    k += params.steps if model_time else 0
    ramp = ramp_from_logits([a + b for a, b in zip(logits, theta[k:])]) if logits else params.ramp
    return replace(params, weights=tuple(groups), model_time=times, ramp=ramp)


def _box(steps: int, model_time: bool, afs: bool = False) -> tuple[list[float], list[float]]:
    """(limit, finite-difference step) of each coordinate: the offsets (1, 2, then 3 per step; ``afs``: one step
    more), with ``model_time`` one delta per evaluation, and the N-1 shifts of the ramp's logits."""
    offsets = sum(group_size(i) for i in range(steps + afs))
    times = steps if model_time else 0
    return ([FIT_WEIGHT_LIMIT] * offsets + [MODEL_TIME_LIMIT] * times + [RAMP_LIMIT] * (steps - 1),
            [WEIGHT_STEP] * offsets + [TIME_STEP] * times + [RAMP_STEP] * (steps - 1))


def equivalent_offsets(solver: Solver, sigmas: list[float], base: str = SOLVERS[1], tolerance: float = 1e-9,
                       fold: bool = False, sigma_table: torch.Tensor | None = None, prediction: str = "data"
                       ) -> Weights | None:
    """The offsets from ``base``'s weights (``learned.default_weights``) with which the weighted multistep solver
    (``learned.sample_weighted``, its steps weighing ``prediction``: data or noise predictions) takes the steps
    ``solver`` takes over ``sigmas``, or None where no offsets do. UniPC with the analytical first step
    (``sigma_table`` places its midpoint) is read as the weighted solver with ``afs``: N+1 steps, the estimate from
    the latent its first prediction.

    Read off the solver, not derived: it runs on a (1, N+1) latent whose first element is the start and whose model
    returns the k-th unit vector at its k-th evaluation, so each state is its coefficients on the start and on every
    data prediction (the analytical first step's estimate is a multiple of the start). A step i is a weighted one
    when its state is the previous times the step's ratio plus its scale times a combination of the step's own
    prediction and up to two earlier ones alone (to ``tolerance``, relative). Carried from one evaluation to the next
    (the corrector's result is never evaluated, the next step starts from it), UniPC of order 1 or 2 is one exactly
    in its own prediction: in the data prediction for prediction="data", in the noise prediction (the recipes') for
    prediction="noise". In the other prediction its corrector carries every earlier output, with weights that fall
    off geometrically: in the data prediction, with ``fold``, those before D_i-2 are added to D_i-2's weight (the
    same total weight: consistent to first order), an approximation of the solver; without it, None."""
    afs = solver.unipc and solver.afs
    solver = replace(solver, finish=FINISH_LAST_SIGMA)
    evaluations, form = len(sigmas) - 1, solver.noise_form
    grid = torch.tensor(sigmas, dtype=torch.float64)
    path_sigmas = afs_schedule(grid, sigma_table, form).tolist() if afs else list(sigmas)
    steps = len(path_sigmas) - 1
    states: list[torch.Tensor] = []

    def unit_outputs(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        states.append(x[0].clone())
        out = torch.zeros_like(x)
        if len(states) <= evaluations:
            out[0, len(states)] = 1.0
        return out

    start = torch.zeros((1, evaluations + 1), dtype=torch.float64)
    start[0, 0] = 1.0
    try:
        end = sample(unit_outputs, start, grid, disable=True, solver=solver, sigma_table=sigma_table)
    except (ValueError, RuntimeError, IndexError):
        return None
    if len(states) != evaluations:
        return None  # not one evaluation per step: no weighted run is that
    # coordinates: 0 the start (with afs: the estimate D_0 / estimate), k >= 1 the k-th evaluation's D
    path = [start[0], *states, end[0]] if afs else [*states, end[0]]
    estimate = float(afs_estimate(torch.ones(1, dtype=torch.float64), sigmas[0], form)[1]) if afs else 0.0
    if prediction == "noise":
        return _noise_offsets(path, path_sigmas, afs, estimate, base, form, tolerance)
    offsets = []
    lams = [half_log_snr(s, form) for s in path_sigmas]
    for i in range(steps):
        sigma, sigma_next = path_sigmas[i], path_sigmas[i + 1]
        ratio = sigma_next / sigma
        scale = 1.0 if sigma_next == 0.0 else -signal_scale(sigma_next, form) * math.expm1(-(lams[i + 1] - lams[i]))
        change = (path[i + 1] - ratio * path[i]) / scale
        size = float(change.abs().max()) + 1.0
        if afs:  # weights[k]: on the D of step k (step 0's the estimate; 0 where it is 0, sigma 1 in the const form)
            weights = change.clone()
            weights[0] = change[0] / estimate if estimate != 0.0 else 0.0
        else:  # weights[k]: on D_k
            weights = change[1:]
        unexplained = 0.0 if (afs and estimate != 0.0) else abs(float(change[0]))
        oldest = max(0, i + 1 - HISTORY)
        if unexplained > tolerance * size or any(abs(float(w)) > tolerance * size for w in weights[i + 1:]):
            return None
        if oldest > 0 and float(weights[:oldest].abs().max()) > tolerance * size:
            if not fold:
                return None
            weights = weights.clone()
            weights[oldest] += weights[:oldest].sum()  # D_k ~ D_oldest: the same total weight, first order kept
        defaults = default_weights(base, lams[i - 1] if i > 0 else None, lams[i], lams[i + 1])
        free = afs and estimate == 0.0  # D_0 = 0: any weight on it is the same step; offset 0
        offsets.append(tuple(0.0 if (free and i == j) else float(weights[i - j]) - defaults[j]
                             for j in range(group_size(i))))
    return tuple(offsets)


def _noise_offsets(path: list[torch.Tensor], sigmas: list[float], afs: bool, estimate: float, base: str, form: str,
                   tolerance: float) -> Weights | None:
    """``equivalent_offsets`` for the weighted solver in the noise prediction: each step's change, (x' - (alpha'/alpha)
    x) / (-sigma' expm1(h)) (to sigma 0: (x - alpha x') / sigma), as a combination of the noise predictions
    eps_k = (x_k - alpha_k D_k) / sigma_k of the step and up to two before it (least squares, exact to
    ``tolerance``). A step from alpha = 0 (sigma 1, const form) is fixed: offsets 0."""
    count = path[0].numel()

    def denoised(k: int) -> torch.Tensor:
        unit = torch.zeros(count, dtype=torch.float64)
        if afs and k == 0:
            unit[0] = estimate
        else:
            unit[k if afs else k + 1] = 1.0
        return unit

    eps = [(path[k] - signal_scale(s, form) * denoised(k)) / s for k, s in enumerate(sigmas[:-1])]
    lams = [half_log_snr(s, form) for s in sigmas]
    offsets = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        alpha = signal_scale(sigma, form)
        size = group_size(i)
        if alpha == 0.0:
            offsets.append((0.0,) * size)
            continue
        if sigma_next == 0.0:
            change = (path[i] - alpha * path[i + 1]) / sigma
        else:
            change = (path[i + 1] - (signal_scale(sigma_next, form) / alpha) * path[i]) / (
                -sigma_next * math.expm1(lams[i + 1] - lams[i]))
        window = torch.stack([eps[i - j] for j in range(size)], dim=1)
        weights = torch.linalg.lstsq(window, change.reshape(-1, 1)).solution.reshape(-1)
        if float((window @ weights - change).abs().max()) > tolerance * (float(change.abs().max()) + 1.0):
            return None
        defaults = default_weights(base, lams[i - 1] if i > 0 else None, lams[i], lams[i + 1])
        found = [float(weights[j]) - defaults[j] for j in range(size)]
        offsets.append(tuple(0.0 if abs(v) <= tolerance else v for v in found))
    return tuple(offsets)


def starts(schedule: ScheduleParams, sigma_table: torch.Tensor) -> dict[str, ScheduleParams]:
    """Where the fit of a UniPC ``schedule`` may start (it takes the closest on the probes): DPM++1S and DPM++2M on
    the schedule, and without the analytical first step UniPC's weights folded onto three data predictions (as
    DPM++2M's offsets, when inside the fit's box). Not UniPC itself (the weighted solver in the noise prediction
    with the offsets read off it): measured, not kept (docs/learned.md)."""
    bases = {name: rounded(replace(schedule, solver=name, variant=None, order=None)) for name in SOLVERS}
    solver = params_solver(schedule)
    folded = None if solver.afs else equivalent_offsets(solver, schedule.sigmas(sigma_table).tolist(), fold=True)
    if folded is not None and all(abs(v) <= FIT_WEIGHT_LIMIT for group in folded for v in group):
        bases[f"{solver.schedule_solver}'s weights"] = rounded(replace(bases[SOLVERS[1]], weights=folded))
    return bases


def learn(run: Run, reference: torch.Tensor, held_out_run: Run, held_out_reference: torch.Tensor,
          sigma_table: torch.Tensor, params: ScheduleParams, mode: str, *, measure: Measure | None = None,
          time_budget: float = math.inf, max_iterations: int = MAX_ITERATIONS, max_runs: int | None = None,
          check_interrupt: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic
          ) -> LearnResult:
    """Fit ``params``' weights (and with LEARN_MODEL_TIME its model times) to ``reference`` through ``run`` (the
    probes), then keep them only if ``held_out_run`` lands closer to ``held_out_reference`` than ``params`` alone.

    ``run`` / ``held_out_run``: run(sigmas, solver) -> x_N on the tuning / held-out noises, as ``tune`` takes it;
    the references are the many-step solutions from the same noises (``compute_reference``). ``time_budget``
    (seconds) stops the fit with the best so far, ``max_iterations`` bounds its finite-difference Jacobians and
    ``max_runs`` its runs on the probes (a budget that does not depend on the machine's speed); the held-out check
    always runs (two runs).
    """
    if mode not in LEARN_CHOICES[1:]:
        raise ValueError(f"learn = {mode!r} is not one of {list(LEARN_CHOICES[1:])}")
    began = clock()
    measured = (lambda x: x) if measure is None else measure
    reference, held_out_reference = measured(reference), measured(held_out_reference)
    schedule = rounded(replace(params, weights=None, model_time=None))
    model_time = mode == LEARN_MODEL_TIME
    count = [0, 0]  # runs, evaluations

    def spent() -> bool:
        return clock() - began > time_budget or (max_runs is not None and count[0] >= max_runs)

    def solve(which: Run, candidate: ScheduleParams) -> torch.Tensor:
        if check_interrupt is not None:
            check_interrupt()
        count[0] += 1
        count[1] += candidate.steps
        return measured(which(candidate.sigmas(sigma_table), params_solver(candidate)))

    def residuals(theta: list[float]) -> tuple[float, torch.Tensor | None]:
        candidate = _with(base, theta, model_time, logits)
        if not valid_schedule(candidate.sigmas(sigma_table), candidate.steps, candidate.end_zero):
            return math.inf, None
        x = solve(run, candidate)
        value = distance(x, reference)
        r = (x.detach().to("cpu", torch.float64) - reference.detach().to("cpu", torch.float64)).reshape(x.shape[0], -1)
        return (value if math.isfinite(value) else math.inf), r

    start_value = distance(solve(run, schedule), reference)
    origin = f"{schedule.solver}, {start_value:.4g}"
    if schedule.solver in SOLVERS:
        base = schedule
    else:  # UniPC takes no weights: start from its own as DPM++2M's offsets, or from the better DPM++ solver
        bases = starts(schedule, sigma_table)
        values = {name: distance(solve(run, candidate), reference) for name, candidate in bases.items()}
        name = min(values, key=values.get)
        base, origin = bases[name], f"{name}, {values[name]:.4g}"
    limits, steps = _box(params.steps, model_time, base.afs)
    logits = list(logits_from_ramp(base.ramp)) if base.ramp else [0.0] * (params.steps - 1)
    theta = []  # each step's offsets in full (a text leaves out a step's trailing zeros)
    for i, group in enumerate(base.weights or ()):
        theta += [*group, *[0.0] * (group_size(i) - len(group))]
    theta += [0.0] * (len(limits) - len(theta))
    value, r = residuals(theta)

    def finite_differences() -> torch.Tensor | None:
        """The Jacobian of the unweighted residuals at ``theta``, one run per parameter; None if out of time. ``theta``
        moves to the best of its runs if that lowers the distance."""
        nonlocal theta, value, r
        jacobian = torch.zeros(r.numel(), len(theta), dtype=torch.float64)
        best = (theta, value, r)
        for j, (step, limit) in enumerate(zip(steps, limits)):
            if spent():
                return None
            step *= scale
            for trial_step in ((step, -step) if theta[j] + step <= limit else (-step,)):
                moved = list(theta)
                moved[j] += trial_step
                moved_value, moved_r = residuals(moved)
                if moved_r is not None:  # else an invalid schedule (steps merging): try the other side
                    jacobian[:, j] = (moved_r - r).reshape(-1) / trial_step
                    if moved_value < best[1]:
                        best = (moved, moved_value, moved_r)
                    break
        theta, value, r = best
        return jacobian

    jacobian, need, jacobians, damping, mark, scale, retries = None, True, 0, DAMPING, math.inf, 1.0, 0
    while not spent():
        if need:
            if jacobians >= max_iterations:
                break
            if mark - value < TOLERANCE * mark:
                if retries >= FD_RETRIES:
                    break  # the last Jacobian and the steps after it gained too little: converged
                scale, retries = scale * FD_RETRY_SCALE, retries + 1
            mark = value
            if (jacobian := finite_differences()) is None:
                break
            need, fresh, jacobians = False, True, jacobians + 1
        # IRLS: each probe's rows weighted by 1 / sqrt(|r_p|), so sum_p |r_p| ~ the mean distance is minimised
        weights = r.pow(2).sum(1).sqrt().clamp_min(1e-12).rsqrt().repeat_interleave(r.shape[1])[:, None]
        improved = False
        for _ in range(DAMPING_TRIES):
            weighted = jacobian * weights
            normal, gradient = weighted.T @ weighted, weighted.T @ (r.reshape(-1, 1) * weights)
            matrix = normal + damping * torch.diag(normal.diagonal().clamp_min(1e-12))
            move = torch.linalg.solve(matrix, -gradient).reshape(-1).tolist()
            trial = [min(max(t + m, -limit), limit) for t, m, limit in zip(theta, move, limits)]
            if spent():
                break
            trial_value, trial_r = residuals(trial)
            s = torch.tensor(trial, dtype=torch.float64) - torch.tensor(theta, dtype=torch.float64)
            # Broyden, J += (y - J s) s^T / s^T s, on every valid trial but the failed ones on a fresh Jacobian
            if trial_r is not None and float(s @ s) > 0 and (trial_value < value or not fresh):
                y = (trial_r - r).reshape(-1)
                jacobian += torch.outer(y - jacobian @ s, s) / float(s @ s)
            if trial_value < value:
                gain = (value - trial_value) / value
                theta, value, r, improved = trial, trial_value, trial_r, True
                damping = max(damping / 3.0, 1e-6)
                break
            damping *= 10.0
        if not improved or gain < TOLERANCE:
            need, damping = True, DAMPING  # the updated Jacobian no longer leads down: a fresh one
        fresh = False
    fitted = rounded(_with(base, theta, model_time, logits))
    tuning = (start_value, distance(solve(run, fitted), reference))
    held_out = (distance(solve(held_out_run, schedule), held_out_reference),
                distance(solve(held_out_run, fitted), held_out_reference))
    better = held_out[1] < held_out[0] and math.isfinite(held_out[1])
    count_held = held_out_reference.shape[0]
    if better:
        reason = (f"learned {mode.split('+', 1)[1]}: held-out distance {held_out[1]:.4g} against {held_out[0]:.4g} "
                  f"for the schedule alone ({count_held} noises not used in tuning)")
    else:
        reason = (f"kept the schedule alone: the learned {mode.split('+', 1)[1]} were not better on {count_held} "
                  f"held-out noises ({held_out[1]:.4g} against {held_out[0]:.4g}; on the probes {tuning[1]:.4g} "
                  f"against {tuning[0]:.4g})")
    chosen = fitted if better else schedule
    return LearnResult(chosen, format_params(chosen), better, fitted, reason, tuning, held_out, count[1], count[0],
                       clock() - began, origin)
