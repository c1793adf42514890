"""The quality benchmark's yardsticks for trained networks, and the quality-equivalent speed-up search.

A trained network has no exact moments: a sampler is scored by its distance to what the network itself
converges to, the reference samples of a many-step high-order solver from the same noises (Frechet distance
to their empirical moments, RMS to the same-noise reference). ``reference_shift`` says how far the
reference still moves when its step size is halved; ``first_reaching`` and ``speedup_steps`` find the number
of steps at which a sampler's distance curve first reaches a target (the speed-up table). Plain torch, no
ComfyUI: the harness (``quality_ranking.py``) feeds these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from quality_models import frechet_distance

SPEEDUP_MAX_STEPS = 40
# The steps scanned first (every step up to 12, then coarser); a bracket is then filled in step by step, so the
# answer is the first integer step count whatever the grid.
SPEEDUP_GRID = (*range(1, 13), 14, 16, 20, 24, 28, 32, 36, 40)


@dataclass(frozen=True)
class Moments:
    """Mean, covariance square root and covariance trace of a set of samples: what the FD compares against."""

    mean: torch.Tensor
    covariance_sqrt: torch.Tensor
    trace: float

    @classmethod
    def of(cls, samples: torch.Tensor) -> "Moments":
        """The empirical moments of samples (n, ...) flattened to (n, D), in float64."""
        flat = samples.reshape(samples.shape[0], -1).to(torch.float64)
        mean = flat.mean(0)
        centred = flat - mean
        covariance = centred.T @ centred / (flat.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        root = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
        return cls(mean, root, float(covariance.trace()))

    def fd(self, samples: torch.Tensor) -> float:
        """Frechet distance of ``samples`` to these moments."""
        return frechet_distance(samples, self.mean, self.covariance_sqrt, self.trace)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS of a - b over every element of the batch (float64)."""
    return float((a.to(torch.float64) - b.to(torch.float64)).pow(2).mean().sqrt())


@dataclass(frozen=True)
class ReferenceShift:
    """How far the reference moves when its step size is halved (steps -> 2 steps), on one seed's noises."""

    steps: int
    rms: float  # RMS(reference_steps - reference_2steps): bounds the change of every row's RMS to it
    fd_between: float  # FD of the coarse reference's samples to the fine one's moments
    fd_shift: float  # max over the rows scored of |FD to coarse - FD to fine|

    def converged(self, smallest_difference: float) -> bool:
        """Whether halving the step size moves FD and RMS less than the smallest difference reported."""
        return max(self.fd_shift, self.rms) < smallest_difference


def reference_shift(steps: int, coarse: torch.Tensor, fine: torch.Tensor, rows: list[torch.Tensor]) -> ReferenceShift:
    """Compare the reference of ``steps`` steps with the one of twice as many on the same noises, through the
    samples ``rows`` (each row's output on those noises)."""
    coarse_moments, fine_moments = Moments.of(coarse), Moments.of(fine)
    shift = max((abs(coarse_moments.fd(out) - fine_moments.fd(out)) for out in rows), default=0.0)
    return ReferenceShift(steps, rms(coarse, fine), fine_moments.fd(coarse), shift)


def first_reaching(curve: dict[int, float], target: float) -> tuple[int | None, float | None]:
    """(first step count M whose distance is at or below ``target``, M interpolated linearly in log distance
    between the step count before it and M); (None, None) if no point of the curve reaches the target."""
    points = sorted((m, d) for m, d in curve.items() if math.isfinite(d))
    for i, (m, d) in enumerate(points):
        if d <= target:
            if i == 0 or target <= 0 or d <= 0:
                return m, float(m)
            m0, d0 = points[i - 1]
            share = (math.log(d0) - math.log(target)) / (math.log(d0) - math.log(d)) if d0 > d else 1.0
            return m, m0 + (m - m0) * min(max(share, 0.0), 1.0)
    return None, None


def speedup_steps(distance_at: Callable[[int], float], target: float, grid=SPEEDUP_GRID,
                  max_steps: int = SPEEDUP_MAX_STEPS, curve: dict[int, float] | None = None
                  ) -> tuple[int | None, float | None]:
    """The first step count (up to ``max_steps``) whose ``distance_at`` reaches ``target``, and its interpolated
    value (``first_reaching``). Scans ``grid`` upwards, then every step count inside the bracket it found, so
    the answer is the first integer even where the grid is coarse. ``curve`` caches distances between calls."""
    curve = {} if curve is None else curve

    def at(m: int) -> float:
        if m not in curve:
            curve[m] = distance_at(m)
        return curve[m]

    previous = 0
    for m in (m for m in grid if m <= max_steps):
        if at(m) <= target:
            for between in range(previous + 1, m):
                at(between)
            return first_reaching({k: v for k, v in curve.items() if k <= m}, target)
        previous = m
    return None, None
