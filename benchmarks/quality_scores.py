"""The quality benchmark's scores: one method's scores per seed (``Row``) and how a model scores a method.

On an analytic model (``AnalyticScorer``): Frechet distance to the exact model, RMS to the reference ODE solution of
the same noise. On a trained network (``TrainedScorer``, ``quality_yardsticks``): FD to its own reference samples and
RMS to the same-noise reference, seed 0 also against twice as many reference steps. ``quality_ranking.py`` ranks
the rows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from quality_methods import SCREEN_SEED, Config, Harness, Method
from quality_models import LATENT_SHAPE, frechet_distance, reference_solution
from quality_trained import TrainedTarget
from quality_yardsticks import Moments, ReferenceShift, rms

log = logging.getLogger("quality")

PREVIEW = 8  # trained models, seed 0: outputs kept for the sample grids


@dataclass
class Row:
    """One method's scores, one value per seed."""

    method: Method
    fd: list[float] = field(default_factory=list)
    rms_end: list[float] = field(default_factory=list)
    rms_zero: list[float] = field(default_factory=list)
    fd_fine: float = math.nan  # trained models, seed 0: FD to the reference of twice as many steps
    preview: torch.Tensor | None = None  # trained models, seed 0: the first PREVIEW outputs (the sample grids)

    @staticmethod
    def stats(values: list[float]) -> tuple[float, float]:
        """Mean and 95% half-width (1.96 sd / sqrt(n)); 0 with one seed."""
        t = torch.tensor(values, dtype=torch.float64)
        half = 1.96 * float(t.std()) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        return float(t.mean()), half

    @property
    def mean_fd(self) -> float:
        """The mean FD over seeds (inf when not finite)."""
        value = Row.stats(self.fd)[0]
        return value if math.isfinite(value) else math.inf

    def mean(self, metric: str) -> float:
        """The mean over seeds of a metric of METRICS (inf when not finite)."""
        value = Row.stats(self.fd if metric == "FD" else self.rms_zero)[0]
        return value if math.isfinite(value) else math.inf



class AnalyticScorer:
    """Scores on an analytic model: FD to its exact moments, RMS to the RK4 reference of the same noise."""

    def __init__(self, harness: Harness, config: Config):
        self.harness, self.config = harness, config
        self.seeds, self.samples = config.seeds, config.samples
        mixture = harness.mixture
        self.mean, covariance = mixture.mean(), mixture.covariance()
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        self.covariance_sqrt = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
        self.trace = float(covariance.trace())
        self.floor = Row(Method("exact samples of the model", "floor", "-", "-", 0, torch.zeros(1), None, 0.0))
        self.noises = []
        for seed in range(config.seeds):
            generator = torch.Generator().manual_seed(1000 + seed)
            self.noises.append(torch.randn((config.samples, *LATENT_SHAPE), generator=generator))
            self.floor.fd.append(frechet_distance(mixture.sample(config.samples, generator), self.mean,
                                                  self.covariance_sqrt, self.trace))
        self.references: list[dict] = [{} for _ in range(config.seeds)]  # start key -> {sigma: state}
        self.reference_check = math.nan

    def prepare(self, methods: list[Method]) -> None:
        """Solve the reference ODE once per seed and start, with every sigma where these methods stop."""
        began = time.perf_counter()
        ends: dict[tuple, set] = {}
        for m in methods:
            key = self.harness.start(m, self.noises[0][:1])[1]
            ends.setdefault(key, {0.0}).add(m.sigma_end)
        for seed, noise in enumerate(self.noises):
            for key, sigma_ends in ends.items():
                self._solve(seed, key, sigma_ends)
        log.info("references solved (%.0f s)", time.perf_counter() - began)

    def _solve(self, seed: int, key: tuple, sigma_ends: set) -> dict:
        mixture, steps = self.harness.mixture, self.config.reference_steps
        noise = self.noises[seed]
        x_start = self.harness.ms.noise_scaling(torch.tensor(key[0], dtype=torch.float64), noise.double(),
                                                torch.zeros_like(noise, dtype=torch.float64), key[1])
        states = reference_solution(mixture, x_start, key[0], sigma_ends | {0.0}, steps)
        if seed == 0 and math.isnan(self.reference_check):
            coarse = reference_solution(mixture, x_start, key[0], set(), steps // 2)
            self.reference_check = float((coarse[0.0] - states[0.0]).pow(2).mean().sqrt())
        self.references[seed][key] = states
        return states

    def score(self, m: Method, stops: bool = True) -> Row:
        """Sample ``m`` from every seed's noise and score it. ``stops=False`` (the speed-up search, which reads FD
        and RMS at 0 only): no reference is solved for a start or a stopping sigma not solved yet (a solve takes
        seconds per seed on the clustered model), and what it would give is NaN."""
        row = Row(m)
        for seed, noise in enumerate(self.noises):
            out, nfe = self.harness.sample(m.make_sampler(), m.sigmas, noise, seed)
            if nfe != m.nfe:
                raise AssertionError(f"{m.name}: {nfe} evaluations, planned {m.nfe}")
            key = self.harness.start(m, noise[:1])[1]
            states = self.references[seed].get(key)
            if stops and (states is None or m.sigma_end not in states):
                states = self._solve(seed, key, set(states or {}) | {m.sigma_end})
            states = states or {}
            flat = out.reshape(out.shape[0], -1).to(torch.float64)
            row.fd.append(frechet_distance(flat, self.mean, self.covariance_sqrt, self.trace))
            row.rms_end.append(_rms(flat, states.get(m.sigma_end)))
            row.rms_zero.append(_rms(flat, states.get(0.0)))
        return row


def _rms(x: torch.Tensor, reference: torch.Tensor | None) -> float:
    """RMS of x - reference (NaN without a reference)."""
    return math.nan if reference is None else float((x - reference).pow(2).mean().sqrt())


class TrainedScorer:
    """Scores on a trained network: FD to its own reference samples (DPM++2M Karras, many steps to sigma 0, from the
    same noises) and RMS to the same-noise reference; seed 0 also against twice as many reference steps."""

    def __init__(self, target: TrainedTarget, harness: Harness, config: Config):
        began = time.perf_counter()
        self.target, self.harness, self.config = target, harness, config
        self.seeds, self.samples = config.trained_seeds, config.trained_samples
        self.steps = config.trained_reference_steps
        self.noises, self.references, self.moments = [], [], []
        for seed in range(self.seeds):
            generator = torch.Generator().manual_seed(1000 + seed)
            noise = torch.randn((self.samples, *target.latent_shape), generator=generator)
            reference = target.reference(noise, self.steps, seed)
            self.noises.append(noise)
            self.references.append(reference)
            self.moments.append(Moments.of(reference))
        self.fine = target.reference(self.noises[0], 2 * self.steps, 0)
        self.fine_moments = Moments.of(self.fine)
        self.preview_reference = self.references[0][:PREVIEW].clone()
        log.info("%s: references (%d and %d steps) %.0f s", target.model.key, self.steps, 2 * self.steps,
                 time.perf_counter() - began)

    def prepare(self, methods: list[Method]) -> None:
        """Nothing to prepare: the references are computed at construction."""

    def screen(self, methods: list[Method], keep: int) -> tuple[list[Method], dict[int, int]]:
        """The ``keep`` core methods per budget with the lowest RMS to the reference on a small batch of other
        noises (seed SCREEN_SEED)."""
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(SCREEN_SEED)
        noise = torch.randn((self.config.trained_screen, *self.target.latent_shape), generator=generator)
        reference = self.target.reference(noise, self.steps, SCREEN_SEED)
        by_budget: dict[int, list[tuple[float, int, Method]]] = {}
        for i, m in enumerate(methods):
            out, nfe = self.target.sample(m.make_sampler(), m.sigmas, noise, SCREEN_SEED)
            distance = rms(out, reference)
            by_budget.setdefault(m.budget, []).append((distance if math.isfinite(distance) else math.inf, i, m))
        chosen = [m for entries in by_budget.values() for _, _, m in sorted(entries, key=lambda e: e[:2])[:keep]]
        log.info("%s: screened %d core pairs (%.0f s)", self.target.model.key, len(methods),
                 time.perf_counter() - began)
        return chosen, {b: len(entries) for b, entries in by_budget.items()}

    def score(self, m: Method, stops: bool = True) -> Row:
        """Sample ``m`` from every seed's noise through ComfyUI and score it against the reference (``stops``: as
        AnalyticScorer's; the trained models report no RMS where a method stops)."""
        row = Row(m)
        for seed, noise in enumerate(self.noises):
            out, nfe = self.target.sample(m.make_sampler(), m.sigmas, noise, seed)
            if nfe != m.nfe:
                raise AssertionError(f"{m.name}: {nfe} evaluations, planned {m.nfe}")
            row.fd.append(self.moments[seed].fd(out) if torch.isfinite(out).all() else math.inf)
            row.rms_end.append(math.nan)
            row.rms_zero.append(rms(out, self.references[seed]))
            if seed == 0:
                row.fd_fine = self.fine_moments.fd(out) if torch.isfinite(out).all() else math.inf
                row.preview = out[:PREVIEW].clone()
        return row

    def shift(self, rows: list[Row]) -> ReferenceShift:
        """How far the reference moves at half the step size (seed 0): RMS between the two, and the largest change
        of a ranked row's FD."""
        changes = [abs(r.fd[0] - r.fd_fine) for r in rows if math.isfinite(r.fd[0]) and math.isfinite(r.fd_fine)]
        return ReferenceShift(self.steps, rms(self.references[0], self.fine), self.fine_moments.fd(self.references[0]),
                              max(changes, default=0.0))
