"""The schedule tuner's objective: how far a few-step schedule's result lands from the reference.

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

from .params import ScheduleParams, format_params
from .sampling import sample_solver
from .schedule import karras_sigmas, schedule_problem

REFERENCE_STEPS = 40
LOGIT_LIMIT = 3.0  # increments stay within a factor e^6 of each other: none collapses

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


def valid_schedule(sigmas: torch.Tensor, steps: int) -> bool:
    """N+1 finite sigmas, positive, strictly descending by steps that count (``schedule.schedule_problem``)."""
    return len(sigmas) == steps + 1 and schedule_problem(sigmas) is None


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

