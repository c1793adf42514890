"""The ceiling row: a long generic search (1000+ objective evaluations) in the tuner's design space.

The same objective as the tuner (``fewstep.tuner_objective``: mean per-probe RMS of x_N to the 40-step DPM++2M
reference at sigma 0, on the same probe noises) over the same schedule parameters: the end (log sigma_end,
continuous as in the Gauss-Newton search, extended below its range to the end at sigma_min), log(time_rho)
and the N-1 softmax logits of the interior positions (the ramp); and over the tuner's other choices: the
solver (DPM++1S, DPM++2M, UniPC and UniPC with the analytical first step, as the recipes run them: bh1, order
auto; the tuner's auto also tries bh2 and order 2, second-order differences left out here to keep the
budget on the search) and ``end`` (index, the paper's early stop, or 0). Powell's method from scipy runs on
each combination of solver and end with a short budget first, then the rest of the budget goes to the best
combinations: differential evolution from a population spread about the best point so far (the objective has
steps, probes that change mode, where Powell's line searches stop), then Powell from the best point. What the
tuner reaches is reported as its
share of the ceiling's gain over the recipe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

CEILING_EVALUATIONS = 1500  # distinct schedules run, at least
SEARCH_VERSION = 6  # part of the cache key: bump when the search changes, so older searches are not reused
FIRST_ROUND = 15  # distinct schedules per combination in the first round
FINALISTS = 3  # combinations that share the rest of the budget: differential evolution, then Powell
EVOLUTION_SHARE = 0.7  # of the rest, for differential evolution
POPULATION = 8  # differential evolution's population per coordinate
SPREAD = 0.7  # differential evolution's first population: normal about the best point, this sd per coordinate
SIGMA_MIN_BAND = 0.5  # log-sigma below the continuous end range where the end is sigma_min


@dataclass
class Ceiling:
    """The best schedule the long search found, and how it compares with the recipe."""

    budget: int
    text: str  # params text: what Few-Step Sigmas samples
    objective: float
    recipe_objective: float  # the recipe for this step count, with its own solver and end
    evaluations: int  # distinct schedules run
    calls: int  # objective calls (repeats of a rounded schedule are not run again)
    seconds: float
    combinations: dict[str, float] = field(default_factory=dict)  # "solver end" -> best objective

    def share(self, objective: float) -> float:
        """The share of the ceiling's gain over the recipe that a schedule with ``objective`` reaches."""
        gain = self.recipe_objective - self.objective
        return (self.recipe_objective - objective) / gain if gain > 0 else float("nan")


class Objective:
    """The tuner's objective of a params, each distinct rounded schedule run once."""

    def __init__(self, run, sigma_table: torch.Tensor, reference: torch.Tensor):
        from fewstep.params import format_params

        self.run, self.table, self.reference = run, sigma_table, reference
        self.format = format_params
        self.seen: dict[str, float] = {}
        self.calls = 0

    def __call__(self, params) -> float:
        from fewstep.plan import params_solver
        from fewstep.schedule import schedule_problem
        from fewstep.tuner_objective import distance

        self.calls += 1
        text = self.format(params)
        if text not in self.seen:
            sigmas = params.sigmas(self.table)
            value = math.inf
            if len(sigmas) == params.steps + 1 and schedule_problem(sigmas, final_zero=params.end_zero) is None:
                value = distance(self.run(sigmas, params_solver(params)), self.reference)
            self.seen[text] = value if math.isfinite(value) else math.inf
        return self.seen[text]


def ceiling_search(run, sigma_table: torch.Tensor, steps: int, reference: torch.Tensor,
                   evaluations: int = CEILING_EVALUATIONS) -> Ceiling:
    """Powell on every (solver, end) combination from the recipe for ``steps``: FIRST_ROUND
    schedules each; then the best FINALISTS share what is left of ``evaluations`` (distinct schedules):
    differential evolution from there, then Powell from the best point."""
    import numpy
    import scipy.optimize

    from fewstep.params import END_AT_INDEX, END_AT_ZERO, ScheduleParams, format_params, rounded
    from fewstep.recipes import TIME_RHO_RANGE, recipe_for_step_count
    from fewstep.search_gauss_newton import _EndPoint  # the tuner's own continuous end coordinate
    from fewstep.solver_names import SCHEDULE_SOLVERS
    from fewstep.tuner_objective import LOGIT_LIMIT, ramp_from_logits

    began = time.perf_counter()
    objective = Objective(run, sigma_table, reference)
    recipe = ScheduleParams.from_recipe(recipe_for_step_count(steps))
    recipe_value = objective(recipe)
    base = replace(recipe, steps=steps, ramp=None)
    end = _EndPoint(base.base_steps)
    logits = steps - 1
    log_time_rho = tuple(math.log(v) for v in TIME_RHO_RANGE)

    # the end as one coordinate: log sigma_end over the continuous range of (end_index, base_rho), and below it
    # (down to SIGMA_MIN_BAND under its lower bound) the end at sigma_min, end_index = base_steps - 1
    low, high = end.bounds
    start = [end.log_sigma(base.end_index, base.base_rho), math.log(base.time_rho)] + [0.0] * logits
    bounds = [(low - SIGMA_MIN_BAND, high), log_time_rho] + [(-LOGIT_LIMIT, LOGIT_LIMIT)] * logits

    def params_of(z, solver: tuple, end_choice: str):
        if z[0] < low:
            k, rho = base.base_steps - 1, base.base_rho
        else:
            k, rho = end.of(min(z[0], high), min(base.end_index, base.base_steps - 2))
        time_rho = math.exp(min(max(z[1], log_time_rho[0]), log_time_rho[1]))
        ramp = ramp_from_logits(tuple(min(max(v, -LOGIT_LIMIT), LOGIT_LIMIT) for v in z[2:]))
        name, variant, order = solver
        return rounded(replace(base, end_index=k, base_rho=rho, time_rho=time_rho, ramp=ramp, solver=name,
                               variant=variant, order=order, end=end_choice))

    combinations = [((solver, None, None), end_choice) for solver in SCHEDULE_SOLVERS
                    for end_choice in (END_AT_INDEX, END_AT_ZERO)]
    state = {c: list(start) for c in combinations}
    best = {c: math.inf for c in combinations}

    class Spent(Exception):
        pass

    def objective_of(combination, limit: int):
        def f(z) -> float:
            if len(objective.seen) >= limit:
                raise Spent
            value = objective(params_of(z, *combination))
            if value < best[combination]:
                best[combination], state[combination] = value, list(z)
            return value if math.isfinite(value) else 1e6
        return f

    def powell(combination, budget: int) -> None:
        f = objective_of(combination, len(objective.seen) + budget)
        try:
            scipy.optimize.minimize(f, state[combination], method="Powell", bounds=bounds,
                                    options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 50 * budget})
        except Spent:
            pass

    def evolution(combination, budget: int, seed: int) -> None:
        f = objective_of(combination, len(objective.seen) + budget)
        try:
            generator = numpy.random.default_rng(seed)
            centre = numpy.array(state[combination])
            low_high = numpy.array(bounds)
            population = centre + SPREAD * generator.standard_normal((POPULATION * len(bounds), len(bounds)))
            population = numpy.clip(population, low_high[:, 0], low_high[:, 1])
            population[0] = centre
            scipy.optimize.differential_evolution(f, bounds, init=population, seed=seed, polish=False,
                                                  maxiter=10 ** 6, tol=0)
        except Spent:
            pass

    for combination in combinations:  # which solver and end: a short Powell from the recipe on each
        powell(combination, FIRST_ROUND)
    finalists = sorted(combinations, key=lambda c: best[c])[:FINALISTS]
    rest = max(evaluations - len(objective.seen), 0)
    for i, combination in enumerate(finalists):  # a global search (the objective has steps Powell cannot cross)
        evolution(combination, int(EVOLUTION_SHARE * rest) // len(finalists), seed=i)
    rounds = 0
    while len(objective.seen) < evaluations and rounds < 20:  # then Powell from the best point found
        rounds += 1
        before = len(objective.seen)
        leader = min(finalists, key=lambda c: best[c])
        powell(leader, max(evaluations - len(objective.seen), 10))
        if len(objective.seen) == before:  # Powell converged: another evolution about the best point
            evolution(leader, evaluations - len(objective.seen), seed=len(finalists) + rounds)
    winner = min(combinations, key=lambda c: best[c])
    params = params_of(state[winner], *winner)
    return Ceiling(steps, format_params(params), objective(params), recipe_value, len(objective.seen),
                   objective.calls, time.perf_counter() - began,
                   {f"{' '.join(v for v in s if v)} end={e}": best[(s, e)] for s, e in combinations})


def ceiling_key(model: str, budget: int, probes: int, seed: int) -> str:
    """The cache key of one ceiling search: model, budget, probes, probe seed and the search's version."""
    return f"{model} nfe={budget} probes={probes} seed={seed} search={SEARCH_VERSION}"


class CeilingCache:
    """Ceiling searches already run, in a JSON file (docs/quality_ceiling.json): the search takes minutes per model
    and budget and does not depend on the ComfyUI version sampling the rows, so a run reuses what is there for the
    same model, budget, probes and probe seed (``--ceiling`` runs them again)."""

    def __init__(self, path, refresh: bool = False):
        import json
        from pathlib import Path

        self.path = Path(path) if path is not None else None
        self.entries = {} if refresh or path is None or not self.path.is_file() else json.loads(self.path.read_text())
        self.added: dict[str, dict] = {}  # the searches this run put

    @classmethod
    def in_memory(cls, entries: dict) -> "CeilingCache":
        """A copy of ``entries`` that writes no file (a worker process's: the parent puts what it added)."""
        cache = cls(None)
        cache.entries = dict(entries)
        return cache

    def get(self, key: str) -> Ceiling | None:
        entry = self.entries.get(key)
        return Ceiling(**entry) if entry else None

    def put(self, key: str, ceiling: Ceiling) -> None:
        import json
        from dataclasses import asdict

        self.entries[key] = self.added[key] = asdict(ceiling)
        if self.path is not None:
            self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
