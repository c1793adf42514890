"""The schedule tuner's Gauss-Newton search, the default: ``tune(..., method="gauss_newton")``.

The end of the schedule as one continuous coordinate, log(sigma_end) (``_EndPoint``), then log(time_rho)
and the N-1 softmax logits of the interior positions. A Levenberg-Marquardt search on the probes'
residuals x_N - reference with a finite-difference Jacobian kept up to date by Broyden's rule (one
candidate per step), in two stages (the end alone, then everything) with a line search on time_rho between
them (doubling steps while they pay), and, when stage two stalls, one jump to the same end with the steps
on the Karras spacing (``_karras_logits``, taken if it gains 5 %), else line searches on the end and each
logit. ``gauss_newton_search`` says it in full. On the quality benchmark's analytic models it removes 90 %
of what the compass search (``search_compass.py``) removes at convergence within 30 candidates in every
case (docs/tuner_search.md), on the same models drawn with other seeds in most, not all.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .params import ScheduleParams, format_params, rounded
from .recipes import RHO_RANGE, TIME_RHO_RANGE
from .schedule import STANDARD_TABLE, check_ramp, continuous_timestep, fewstep_timesteps, karras_sigmas
from .tuner_objective import LOGIT_LIMIT, SearchContext, bounded, logits_from_ramp, ramp_from_logits

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


def _karras_logits(params: ScheduleParams, sigma_table: torch.Tensor,
                   rho: float = KARRAS_RHO) -> tuple[float, ...] | None:
    """The N-1 logits (``ramp_from_logits``) that put the interior steps of ``params`` (same end, same time_rho)
    where a Karras spacing with ``rho`` between the schedule's first and last sigma has them; None if that is
    not a valid ramp. The steps land on the Karras sigmas up to the table's interpolation (log-sigma here,
    alphas_cumprod in ``sigma_at_timestep``) and the logit bounds."""
    sigmas = params.sigmas(sigma_table).to(torch.float64)
    target = karras_sigmas(params.steps + 1, float(sigmas[-1]), float(sigmas[0]), rho)
    timesteps = continuous_timestep(target[1:-1], sigma_table).tolist()
    ends = fewstep_timesteps(params.steps, params.base_steps, params.base_rho, params.end_index, params.time_rho)
    first, last = (float(ends[i]) ** (1.0 / params.time_rho) for i in (0, -1))
    ramp = tuple((first - t ** (1.0 / params.time_rho)) / (first - last) for t in timesteps)
    if check_ramp(ramp, params.steps) is not None:
        return None
    return logits_from_ramp(ramp)


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


def gauss_newton_search(context: SearchContext, base: ScheduleParams, free_positions: bool) -> None:
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
        return rounded(replace(base, end_index=k, base_rho=rho, time_rho=math.exp(rest[0]),
                               ramp=ramp_from_logits(rest[1:])))

    def clipped(z: list[float]) -> list[float]:
        return [bounded(v, low, high) for v, (low, high) in zip(z, bounds())]

    start = ([] if at_minimum else [end.log_sigma(base.end_index, base.base_rho)]) + \
        [math.log(base.time_rho)] + [0.0] * logit_count
    z = clipped(start)
    value, residual = context.evaluate(rounded(base))
    if residual is None:  # seen before (the screen of ends and solvers ran it), or not a valid schedule
        residual = context.residuals.get(format_params(rounded(base)))
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
                alpha = bounded(-slope / (2.0 * curvature), 0.1, 0.5)
            radius = alpha * length
            damping *= 2.0
            if radius >= MIN_MOVE:
                continue
            if fresh and not next_stage():
                return
        radius, damping = INITIAL_MOVE, 1e-3
        if not need:
            need = [i for i in range(len(z)) if i not in frozen_of(z)]
