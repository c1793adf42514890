"""The schedule tuner's objective: how far a few-step schedule's result lands from the reference.

Objective. For a few probe noises, the N-step result x_N (the latent the sampler returns for that plan:
at the schedule's last, non-zero sigma with the paper's early stop, what the paper decodes; at sigma 0 with
``end=0``) is compared with a high-accuracy solution of the same probability-flow
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
the last steps. Both ends are so compared on the same footing: the output Few-Step KSampler returns,
against the same reference. ``measure`` (optional) maps both before the distance, e.g. to decoded and
downscaled images (the tuner node's ``vae`` input): the paper's case for the non-zero end rests on what
the VAE makes of the residual noise.

The reference does not depend on the solver or step count: ``compute_reference`` once, and pass it to
each ``tune`` on the same probes.

Also here, for both searches (``search_compass.py``, ``search_gauss_newton.py``): the interior positions
of a schedule (``ScheduleParams.ramp``) as softmax logits of its N increments and back, and
``SearchContext``, which evaluates candidates (each distinct rounded schedule once), keeps the best and
its history, and says when the time budget or the candidate limit stops the search.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .learned import Preconditioning
from .params import ScheduleParams, format_params
from .plan import Solver, params_solver, solver_named
from .sampling import sample
from .schedule import karras_sigmas, schedule_problem

REFERENCE_STEPS = 40
FLOW_REFERENCE_START = 100.0  # the flow reference's first step goes from pure noise to noise-to-signal 100
LOGIT_LIMIT = 3.0  # increments stay within a factor e^6 of each other: none collapses

# run(sigmas, solver): the latent at sigmas[-1] from the probe noises; solver a ``plan.Solver`` or a name of
# SCHEDULE_SOLVERS (as the recipes run it: ``as_solver``)
Run = Callable[[torch.Tensor, "Solver | str"], torch.Tensor]
Measure = Callable[[torch.Tensor], torch.Tensor]  # what the distance compares: latents (probes, ...) -> (probes, ...)


def as_solver(solver: Solver | str) -> Solver:
    """A ``plan.Solver`` as given, or the one a schedule solver's name stands for (``plan.solver_named``)."""
    return solver if isinstance(solver, Solver) else solver_named(solver)


def denoiser_run(denoiser: Callable, x_start: torch.Tensor, sigma_table: torch.Tensor | None = None,
                 preconditioning: Preconditioning | None = None) -> Run:
    """run(sigmas, solver): the solver over ``sigmas`` from ``x_start`` with D(x, sigma_batch) = ``denoiser``
    (``sigma_table``: the model's, for the AFS midpoint of "unipc_afs"; default the standard one;
    ``preconditioning``: the model's c_in / c_skip / c_out for a solver's model time, default eps / flow)."""
    def run(sigmas: torch.Tensor, solver: Solver | str) -> torch.Tensor:
        with torch.no_grad():
            return sample(denoiser, x_start, sigmas, disable=True, solver=as_solver(solver), sigma_table=sigma_table,
                          preconditioning=preconditioning)
    return run


def reference_sigmas(sigma_table: torch.Tensor, steps: int = REFERENCE_STEPS) -> torch.Tensor:
    """Karras (rho 7) from the table's sigma_max to its sigma_min, then 0: ``steps`` evaluations of DPM++2M.
    On a flow model's table (sigma_max 1, the const form): 1, then evenly in the half-log-SNR log((1 - s) / s) from
    s / (1 - s) = FLOW_REFERENCE_START down to the table's sigma_min, then 0. Karras in sigma leaves the high-noise
    end almost unresolved there (its first steps are 1 -> 0.90 -> 0.82 ...: noise-to-signal 9, 4.5, ...), where in
    a latent of hundreds of dimensions the posterior already moves: on the flow benchmark's analytic models
    (docs/quality_flow.md) 40 Karras steps land 0.19 to 0.22 RMS from an RK4 solution, these 0.001 to 0.015."""
    table = sigma_table.to(torch.float64)
    if float(table[-1]) <= 1.0:
        low, high = float(table[0]), min(float(table[-2]), FLOW_REFERENCE_START / (1.0 + FLOW_REFERENCE_START))
        log_ratio = torch.linspace(math.log(high / (1.0 - high)), math.log(low / (1.0 - low)), steps - 1,
                                   dtype=torch.float64)
        sigmas = torch.cat([table.new_ones(1), torch.sigmoid(log_ratio)])  # s / (1 - s) = e^log_ratio
    else:
        sigmas = karras_sigmas(steps, float(table[0]), float(table[-1]), 7.0)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def compute_reference(run: Run, sigma_table: torch.Tensor, reference_steps: int = REFERENCE_STEPS) -> torch.Tensor:
    """The tuner's reference: ``reference_steps`` evaluations of DPM++2M to sigma 0 from the probe noises
    (``reference_sigmas``). It depends on the model, conds, guidance, probes and sigma table only, not on the
    solver or step count being tuned: compute it once and pass it to ``tune(reference=...)`` for each."""
    with torch.no_grad():
        return run(reference_sigmas(sigma_table, reference_steps), "dpmpp_2m")


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch (probes) of each probe's RMS difference."""
    difference = (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).reshape(a.shape[0], -1)
    return float(difference.pow(2).mean(1).sqrt().mean())


def valid_schedule(sigmas: torch.Tensor, steps: int, final_zero: bool = False) -> bool:
    """N+1 finite sigmas, positive (the last one 0 allowed with ``final_zero``: ``end=0``), strictly descending
    by steps that count (``schedule.schedule_problem``)."""
    return len(sigmas) == steps + 1 and schedule_problem(sigmas, final_zero=final_zero) is None


def ramp_from_logits(logits) -> tuple[float, ...] | None:
    """The interior positions (``ScheduleParams.ramp``) of N increments with softmax logits (0, *logits);
    None (even spacing) when every logit is 0."""
    if not any(logits):
        return None
    weights = torch.tensor((0.0, *logits), dtype=torch.float64).softmax(0)
    return tuple(weights.cumsum(0)[:-1].tolist())


def logits_from_ramp(ramp: tuple[float, ...]) -> tuple[float, ...]:
    """The N-1 logits (within +-LOGIT_LIMIT) of the increments of interior positions ``ramp``: the inverse of
    ``ramp_from_logits``."""
    increments = [b - a for a, b in zip((0.0, *ramp), (*ramp, 1.0))]
    return tuple(bounded(math.log(v / increments[0]), -LOGIT_LIMIT, LOGIT_LIMIT) for v in increments[1:])


def bounded(value: float, low: float, high: float) -> float:
    """``value`` clipped to [low, high]."""
    return min(max(value, low), high)


class SearchContext:
    """What both searches share: the run, the reference, the schedules evaluated so far and the limits.

    A candidate is a ``ScheduleParams`` with its solver (``solver``, ``variant``, ``order``) and ``end``: it is
    run as Few-Step KSampler runs that params text (``plan.params_solver``, ``ScheduleParams.sigmas``)."""

    def __init__(self, run: Run, sigma_table: torch.Tensor, steps: int, reference: torch.Tensor | None,
                 time_budget: float, max_candidates: int | None, progress, check_interrupt, clock, began: float,
                 measure: Measure | None = None):
        self.run, self.sigma_table, self.steps = run, sigma_table, steps
        self.measure = measure
        self.reference = reference  # measured (``set_reference``)
        self.time_budget, self.max_candidates = time_budget, max_candidates
        self.progress, self.check_interrupt, self.clock, self.began = progress, check_interrupt, clock, began
        self.seen: dict[str, tuple[float, ScheduleParams, torch.Tensor]] = {}
        self.evaluations = 0
        self.longest = 0.0  # the longest candidate so far: the time budget stops before one would overrun it
        self.best = math.inf
        self.history: list[tuple[int, float]] = []
        self.stopped_by = "converged"
        self.residuals: dict[str, torch.Tensor] = {}  # of every valid candidate: a search may start from one seen
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, reference: torch.Tensor) -> None:
        """The reference latent; the distance compares ``measure`` of it (the latent itself by default)."""
        self.reference = self.measured(reference)

    def measured(self, latent: torch.Tensor) -> torch.Tensor:
        """``measure(latent)`` (decoded images, say), or the latent."""
        return latent if self.measure is None else self.measure(latent)

    def solve(self, sigmas: torch.Tensor, which: Solver | str) -> torch.Tensor:
        """x at sigmas[-1] from the probe noises with solver ``which``; counts the model evaluations."""
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
        if valid_schedule(sigmas, self.steps, params.end_zero):
            tick = self.clock()
            x = self.measured(self.solve(sigmas, params_solver(params)))
            self.longest = max(self.longest, self.clock() - tick)
            value = distance(x, self.reference)
            residual = (x.detach().float() - self.reference.detach().float()).reshape(x.shape[0], -1)
            self.residuals[text] = residual
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

    def best_of(self, keep: Callable[[ScheduleParams], bool] = lambda params: True
                ) -> tuple[float, ScheduleParams, torch.Tensor] | None:
        """(objective, params, sigmas) of the best candidate seen that ``keep`` accepts, or None."""
        kept = [item for item in self.seen.values() if keep(item[1])]
        return min(kept, key=lambda item: item[0]) if kept else None

