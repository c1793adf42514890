"""The ceiling row: a long generic search (Powell, 1000+ objective evaluations) in the tuner's design space.

The same objective as the tuner (``fewstep.tuner_objective``: mean per-probe RMS of x_N to the 40-step DPM++2M
reference at sigma 0, on the same probe noises) over the same schedule parameters: the end (log sigma_end,
continuous as in the Gauss-Newton search, or the end at sigma_min), log(time_rho) and the N-1 softmax logits of
the interior positions (the ramp); and over the choices the tuner is being given: the solver (every
SCHEDULE_SOLVERS) and ``end`` (index, the paper's early stop, or 0). Powell's method from scipy runs on each
combination of solver, end and end-at-sigma_min with a short budget first, then the rest of the budget goes to
the best combinations. What the tuner reaches is reported as its share of the ceiling's gain over the recipe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

CEILING_EVALUATIONS = 1000  # distinct schedules run, at least
FIRST_ROUND = 30  # distinct schedules per combination in the first round
FINALISTS = 3  # combinations that share the rest of the budget


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
        from fewstep.schedule import schedule_problem
        from fewstep.tuner_objective import distance

        self.calls += 1
        text = self.format(params)
        if text not in self.seen:
            sigmas = params.sigmas(self.table)
            value = math.inf
            if len(sigmas) == params.steps + 1 and schedule_problem(sigmas, final_zero=params.end_zero) is None:
                value = distance(self.run(sigmas, params.solver), self.reference)
            self.seen[text] = value if math.isfinite(value) else math.inf
        return self.seen[text]


def ceiling_search(run, sigma_table: torch.Tensor, steps: int, reference: torch.Tensor,
                   evaluations: int = CEILING_EVALUATIONS, solvers: tuple[str, ...] | None = None) -> Ceiling:
    """Powell on every (solver, end, end at sigma_min) combination from the recipe for ``steps``: FIRST_ROUND
    schedules each, then the best FINALISTS share what is left of ``evaluations`` (distinct schedules)."""
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

    def space(at_minimum: bool):
        start = ([] if at_minimum else [end.log_sigma(base.end_index, base.base_rho)]) + \
            [math.log(base.time_rho)] + [0.0] * logits
        bounds = ([] if at_minimum else [end.bounds]) + [log_time_rho] + [(-LOGIT_LIMIT, LOGIT_LIMIT)] * logits
        return start, bounds

    def params_of(z, solver: str, end_choice: str, at_minimum: bool):
        z = list(z)
        if at_minimum:
            k, rho = base.base_steps - 1, base.base_rho
        else:
            k, rho = end.of(min(max(z.pop(0), end.bounds[0]), end.bounds[1]), min(base.end_index, base.base_steps - 2))
        time_rho = math.exp(min(max(z[0], log_time_rho[0]), log_time_rho[1]))
        ramp = ramp_from_logits(tuple(min(max(v, -LOGIT_LIMIT), LOGIT_LIMIT) for v in z[1:]))
        return rounded(replace(base, end_index=k, base_rho=rho, time_rho=time_rho, ramp=ramp, solver=solver,
                               end=end_choice))

    combinations = [(solver, end_choice, at_minimum) for solver in (solvers or SCHEDULE_SOLVERS)
                    for end_choice in (END_AT_INDEX, END_AT_ZERO) for at_minimum in (False, True)]
    state = {c: space(c[2])[0] for c in combinations}
    best = {c: math.inf for c in combinations}

    class Spent(Exception):
        pass

    def search(combination, budget: int) -> None:
        limit = len(objective.seen) + budget
        start, bounds = space(combination[2])

        def f(z) -> float:
            if len(objective.seen) >= limit:
                raise Spent
            value = objective(params_of(z, *combination))
            if value < best[combination]:
                best[combination], state[combination] = value, list(z)
            return value if math.isfinite(value) else 1e6

        try:
            scipy.optimize.minimize(f, state[combination], method="Powell", bounds=bounds,
                                    options={"xtol": 1e-3, "ftol": 1e-6, "maxfev": 50 * budget})
        except Spent:
            pass

    for combination in combinations:
        search(combination, FIRST_ROUND)
    finalists = sorted(combinations, key=lambda c: best[c])[:FINALISTS]
    rounds = 0
    while len(objective.seen) < evaluations and rounds < 20:
        rounds += 1
        share = max((evaluations - len(objective.seen)) // len(finalists), 10)
        before = len(objective.seen)
        for combination in finalists:
            search(combination, share)
        if len(objective.seen) == before:  # every finalist converged: nothing new to run
            break
    winner = min(combinations, key=lambda c: best[c])
    params = params_of(state[winner], *winner)
    return Ceiling(steps, format_params(params), objective(params), recipe_value, len(objective.seen),
                   objective.calls, time.perf_counter() - began,
                   {f"{s} end={e}{' (sigma_min)' if m else ''}": best[(s, e, m)] for s, e, m in combinations})


class CeilingCache:
    """Ceiling searches already run, in a JSON file (docs/quality_ceiling.json): the search takes minutes per model
    and budget and does not depend on the ComfyUI version sampling the rows, so a run reuses what is there for the
    same model, budget, probes and probe seed (``--ceiling`` runs them again)."""

    def __init__(self, path, refresh: bool = False):
        import json
        from pathlib import Path

        self.path = Path(path)
        self.entries = {} if refresh or not self.path.is_file() else json.loads(self.path.read_text())

    def get(self, key: str) -> Ceiling | None:
        entry = self.entries.get(key)
        return Ceiling(**entry) if entry else None

    def put(self, key: str, ceiling: Ceiling) -> None:
        import json
        from dataclasses import asdict

        self.entries[key] = asdict(ceiling)
        self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
