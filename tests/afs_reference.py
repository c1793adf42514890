"""The analytical first step's inserted sigma, written out here from RECIPES.md ("F-scheduler") for the
tests to compare against, independently of fewstep/unipc.py: each of the schedule's first two sigmas is
turned into a fractional timestep by linear interpolation of log(sigma) between the model's table
entries; the inserted timestep is their mean, and its sigma comes from alphas_cumprod = 1 / (1 + sigma^2)
interpolated linearly between the two neighbouring table entries (the reference's interpolation)."""

from __future__ import annotations

import bisect
import math


def timestep_of(sigma: float, table: list[float]) -> float:
    """Fractional timestep of ``sigma`` on ``table`` (ascending sigmas, one per training timestep)."""
    logs = [math.log(s) for s in table]
    value = min(max(math.log(sigma), logs[0]), logs[-1])
    low = min(max(bisect.bisect_right(logs, value) - 1, 0), len(logs) - 2)
    return low + (value - logs[low]) / (logs[low + 1] - logs[low])


def sigma_of(timestep: float, table: list[float]) -> float:
    """Sigma of a fractional timestep: alphas_cumprod interpolated linearly between its neighbours."""
    low, high = math.floor(timestep), math.ceil(timestep)
    a_low, a_high = (1.0 / (1.0 + table[i] ** 2) for i in (low, high))
    alpha = a_low + (timestep - low) * (a_high - a_low)
    return math.sqrt((1.0 - alpha) / alpha)


def midpoint(sigma_0: float, sigma_1: float, table: list[float]) -> tuple[float, float]:
    """(sigma, timestep) AFS inserts between ``sigma_0`` and ``sigma_1``."""
    t = (timestep_of(sigma_0, table) + timestep_of(sigma_1, table)) / 2.0
    return sigma_of(t, table), t


def evaluated_sigmas(sigmas: list[float], afs: bool, table: list[float]) -> list[float]:
    """Where UniPC on ``sigmas`` (N+1, finish last_sigma) evaluates the model: N sigmas. Without AFS
    sigma_0 .. sigma_{N-1}; with AFS the midpoint, then sigma_1 .. sigma_{N-1}."""
    if not afs:
        return list(sigmas[:-1])
    return [midpoint(sigmas[0], sigmas[1], table)[0], *sigmas[1:-1]]
