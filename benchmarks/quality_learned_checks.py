"""The quality benchmark's checks of the learned rows (issue 24), read off a finished run: each learned row against
the tuned row its fit started from (``against_start``), and the speed-up targets on the trained proxies
(``speedup_targets``). ``quality_report`` prints them."""

from __future__ import annotations

from dataclasses import dataclass

from quality_ranking import Results, Suite
from quality_scores import Row
from quality_yardsticks import SPEEDUP_GRID


@dataclass
class AgainstStart:
    """A kept learned row against the tuned row its fit started from (same budget, same noises): the per-seed
    differences learned − start in FD and in RMS at 0, each as (mean, 95 % half-width)."""

    budget: int
    learned: Row
    start: Row
    fd: tuple[float, float]
    rms: tuple[float, float]

    @property
    def worse(self) -> bool:
        """Worse than its start: the paired FD interval lies above 0."""
        return self.fd[0] - self.fd[1] > 0


def against_start(results: Results) -> list[AgainstStart]:
    """Every learned row (a fit the held-out check kept) against the tuned schedule it started from: issue 24's
    "no learned row is worse than the tuned schedule it started from", read paired on the evaluation noises."""
    out = []
    for fit in results.learnings:
        if not fit.result.learned:
            continue
        rows = {r.method.family: r for r in results.table(fit.budget)}
        learned = rows.get(f"FewStep learned ({fit.mode.split('+', 1)[1]})")
        start = rows.get(f"FewStep tuned ({fit.start})")
        if learned is None or start is None:
            raise AssertionError(f"{results.model} NFE {fit.budget}: no row for the fit {fit.mode} from {fit.start}")
        out.append(AgainstStart(fit.budget, learned, start,
                                Row.stats([a - b for a, b in zip(learned.fd, start.fd)]),
                                Row.stats([a - b for a, b in zip(learned.rms_zero, start.rms_zero)])))
    return out


# Issue 24's targets on the trained proxies: the quality-equivalent speed-up over DPM++2M Karras by FD at these
# budgets, and FOUR_X at FOUR_X_BUDGET on at least one proxy (the paper's claim)
SPEEDUP_TARGETS = {5: 2.5, 6: 2.5, 8: 2.0}
FOUR_X, FOUR_X_BUDGET = 4.0, 5


def speedup_factor(found: tuple, budget: int) -> float:
    """M / N of a speed-up search's (first integer M, interpolated M), with the interpolated M; where no step count
    of the search reaches the row, its last one over N, a lower bound."""
    return (found[1] if found[0] is not None else SPEEDUP_GRID[-1]) / budget


def speedup_targets(suite: Suite) -> list[tuple[str, int, float, str, float, bool]]:
    """Per trained model and target budget: (model, N, target, best Few-Step row, its FD speed-up, met)."""
    out = []
    for results in suite.models:
        if not results.trained:
            continue
        for s in results.speedups:
            if s.metric == "FD" and s.budget in SPEEDUP_TARGETS:
                factor = speedup_factor(s.dpmpp, s.budget)
                out.append((results.model, s.budget, SPEEDUP_TARGETS[s.budget], s.row, factor,
                            factor >= SPEEDUP_TARGETS[s.budget]))
    return out
