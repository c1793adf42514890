"""One sampling request, made and checked once: its sigmas, its solver and its FreeU windows.

A ``Plan`` says everything the pack needs to sample a request: the schedule parameters in force (a named
recipe's, a ``params`` text's or the custom widgets'), the N+1 sigmas on the model's own sigma table, the
solver with its options, and the FreeU windows. Every node and the schedule route make it (or a part of it: a
``Solver``, a ``FreeUWindow``) with the functions here and only translate it to and from ComfyUI, so a recipe or
a params text is validated and turned into numbers in this one place. Nothing here imports ComfyUI.

Bad input raises ``PlanError``, whose message names the node input at fault and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import recipes
from .freeu import VERSIONS
from .learned import Weights
from .noise_forms import NOISE_FORM_EPS, NOISE_FORMS
from .params import PREDICTION_DATA, ParamsError, ScheduleParams, parse_params
from .recipes import CUSTOM, RECIPE_CHOICES, RECIPES, FreeUSetting, Recipe, recipe_for_step_count
from .schedule import STANDARD_TABLE, fewstep_timesteps, schedule_problem
from .solver_names import FINISH_LAST_SIGMA, FINISHES, SCHEDULE_SOLVERS, SOLVERS
from .unipc import ORDERS, PREDICTIONS, VARIANTS
from .window import check_window

# Few-Step KSampler's ``freeu`` choices: the recipe's own FreeU windows, or none.
FREEU_RECIPE = "recipe"
FREEU_OFF = "off"
FREEU_CHOICES = (FREEU_RECIPE, FREEU_OFF)
NEEDS_PARAMS = ("recipe = 'custom' needs a schedule in `params` (Few-Step Schedule Tuner's params output, or text "
                "such as 'fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2'); or choose a "
                "named recipe")


class PlanError(ValueError):
    """A request that cannot be sampled; ``input`` is the node input at fault, and the message names it."""

    def __init__(self, message: str, input: str):
        super().__init__(message)
        self.input = input


@dataclass(frozen=True)
class Solver:
    """A solver and its options: DPM++ (``dpmpp_1s``, ``dpmpp_2m``) or UniPC (``unipc``) with order, variant,
    analytical first step and prediction; ``finish`` says what is returned at the last sigma; ``noise_form``
    is the model's (``eps``: x = x0 + sigma eps; ``const``: x = (1 - sigma) x0 + sigma eps, flow matching)."""

    name: str = SOLVERS[0]
    finish: str = FINISH_LAST_SIGMA
    order: str = "auto"
    variant: str = VARIANTS[0]
    afs: bool = False
    prediction: str = PREDICTIONS[0]
    noise_form: str = NOISE_FORM_EPS
    weights: Weights | None = None  # DPM++ only: offsets from its weights per step (fewstep/learned.py)
    # DPM++ only: what the weighted solver's steps weigh, "data" or "noise" predictions (learned.sample_weighted);
    # afs on a DPM++ solver: the weighted solver's analytical first step
    weighted_prediction: str = PREDICTION_DATA
    model_time: tuple[float, ...] | None = None  # per model evaluation, the shift of the time the network is told

    @property
    def unipc(self) -> bool:
        return self.name == "unipc"

    @property
    def schedule_solver(self) -> str:
        """Its name as recipes and params texts give it (``unipc_afs`` for UniPC with the analytical first step)."""
        return "unipc_afs" if self.unipc and self.afs else self.name

    @property
    def label(self) -> str:
        """How the sampler node and the KSampler name of this solver read in messages."""
        if not self.unipc:
            return f"Few-Step DPM++ Sampler ({self.name}; on KSampler: fewstep_{self.name})"
        return "Few-Step UniPC Sampler (on KSampler: fewstep_unipc)"


def solver_named(name: str, finish: str = FINISH_LAST_SIGMA, variant: str | None = None, order: str | None = None,
                 noise_form: str = NOISE_FORM_EPS) -> Solver:
    """The solver a recipe, a params text or the tuner names (one of SCHEDULE_SOLVERS), as the recipes run it:
    UniPC with the noise prediction, bh1, order auto (or the ``variant`` / ``order`` a params text gives), with
    the analytical first step for ``unipc_afs``; stepping in the model's ``noise_form``."""
    if name not in SCHEDULE_SOLVERS:
        raise PlanError(f"solver = {name!r} is not one of {list(SCHEDULE_SOLVERS)}", "solver")
    if name in SOLVERS:
        return dpmpp_solver(name, finish, noise_form)
    return unipc_solver(order or "auto", variant or VARIANTS[0], name == "unipc_afs", finish, PREDICTIONS[0],
                        noise_form)


def params_solver(schedule: ScheduleParams, finish: str = FINISH_LAST_SIGMA) -> Solver:
    """The solver a schedule is sampled with: its own (a params text's ``solver``, ``variant``, ``order``, and its
    ``weights`` and ``model_time``) or, when it names none, the recipe family's for its step count."""
    solver = solver_named(schedule.solver or recipe_for_step_count(schedule.steps).solver, finish, schedule.variant,
                          schedule.order)
    if not schedule.sets_solver_fields:
        return solver
    return replace(solver, weights=schedule.weights, model_time=schedule.model_time, afs=schedule.afs,
                   weighted_prediction=schedule.prediction)


def dpmpp_solver(solver: str, finish: str, noise_form: str = NOISE_FORM_EPS, params: str = "") -> Solver:
    """Few-Step DPM++ Sampler's inputs (and the model's noise form) as a Solver; with a ``params`` text, the
    ``weights``, ``model_time``, ``afs`` and ``prediction`` it carries (its schedule is Few-Step Sigmas' business:
    the same text there)."""
    _choose("solver", solver, SOLVERS)
    _choose("finish", finish, FINISHES)
    _choose("noise_form", noise_form, NOISE_FORMS)
    chosen = Solver(solver, finish, noise_form=noise_form)
    if not (params or "").strip():
        return chosen
    try:
        schedule = parse_params(params)
    except ParamsError as error:
        raise PlanError(str(error), "params") from None
    if schedule.solver not in (None, solver):
        raise PlanError(f"params names solver = {schedule.solver}, but this sampler's solver is {solver}: set it to "
                        f"{schedule.solver} (the weights are offsets from that solver's)", "params")
    return replace(chosen, weights=schedule.weights, model_time=schedule.model_time, afs=schedule.afs,
                   weighted_prediction=schedule.prediction)


def unipc_solver(order: str, variant: str, afs: bool, finish: str, prediction: str = PREDICTIONS[0],
                 noise_form: str = NOISE_FORM_EPS) -> Solver:
    """Few-Step UniPC Sampler's inputs (and the model's noise form) as a Solver."""
    for name, value, allowed in (("order", order, ORDERS), ("variant", variant, VARIANTS), ("finish", finish, FINISHES),
                                 ("prediction", prediction, PREDICTIONS), ("afs", afs, (True, False)),
                                 ("noise_form", noise_form, NOISE_FORMS)):
        _choose(name, value, allowed)
    return Solver("unipc", finish, order, variant, bool(afs), prediction, noise_form)


def _choose(name: str, value, allowed) -> None:
    if value not in allowed:
        raise PlanError(f"{name} = {value!r} is not one of {list(allowed)}", name)


@dataclass(frozen=True)
class FreeUWindow:
    """FreeU values (b1, b2, s1, s2), its version, and where it is on: 1-based steps first_step..last_step
    (negative: from the end) and the model's noise range start_percent..end_percent."""

    b1: float
    b2: float
    s1: float
    s2: float
    version: str = VERSIONS[0]
    first_step: int = 1
    last_step: int = -1
    start_percent: float = 0.0
    end_percent: float = 1.0


def freeu_window(b1: float, b2: float, s1: float, s2: float, version: str, first_step: int, last_step: int,
                 start_percent: float, end_percent: float) -> FreeUWindow:
    """Timed FreeU's inputs as a FreeUWindow."""
    _choose("version", version, VERSIONS)
    message = check_window(first_step, last_step, start_percent, end_percent)
    if message:
        raise PlanError(message, message.split(" ", 1)[0])
    return FreeUWindow(b1, b2, s1, s2, version, first_step, last_step, start_percent, end_percent)


def recipe_windows(settings: tuple[FreeUSetting, ...]) -> tuple[FreeUWindow, ...]:
    """A recipe's FreeU settings as the windows Few-Step KSampler applies (FreeU v1, whole steps)."""
    return tuple(FreeUWindow(s.b1, s.b2, s.s1, s.s2, VERSIONS[0], s.first_step, s.last_step) for s in settings)


@dataclass(frozen=True)
class Plan:
    """Everything about one request: the schedule parameters in force, ``sigmas`` (N+1, float32) on the model's
    sigma table, the solver and the FreeU windows (in the order they patch the model)."""

    recipe: str
    schedule: ScheduleParams
    denoise: float
    sigmas: torch.Tensor
    solver: Solver
    freeu: tuple[FreeUWindow, ...]

    @property
    def nfe(self) -> int:
        """Model evaluations of the schedule (with finish ``last_sigma``; a last step to 0 is one of them)."""
        return len(self.sigmas) - 1


def make_plan(recipe: str, denoise: float = 1.0, params: str = "", custom: ScheduleParams | None = None,
              freeu: str = FREEU_RECIPE, sigma_table: torch.Tensor | Callable[[], torch.Tensor] | None = None
              ) -> Plan:
    """The plan of a request; PlanError naming the input at fault if it cannot be sampled.

    ``recipe``: a named recipe, or ``custom`` with a ``params`` text or, when it is empty, the ``custom``
    widgets (Few-Step Sigmas); without either, ``custom`` is refused (Few-Step KSampler). ``sigma_table``: the
    model's sigma at each training timestep (default the standard SD1.x / SDXL one), or a function that reads it,
    called only once the inputs are valid (a bad input is named before the model is looked at). Every schedule
    is first checked on the standard table (what the inputs mean), then on the model's.
    """
    _choose("freeu", freeu, FREEU_CHOICES)
    params = params or ""
    if recipe == CUSTOM and not params.strip() and custom is None:
        raise PlanError(NEEDS_PARAMS, "params")
    if recipe not in RECIPE_CHOICES:
        raise PlanError(f"recipe = {recipe!r} is not one of {RECIPE_CHOICES}", "recipe")
    named = RECIPES.get(recipe)
    if named is not None:
        schedule, input_name = ScheduleParams.from_recipe(named), "recipe"
    elif params.strip():
        try:
            schedule, input_name = parse_params(params), "params"
        except ParamsError as error:
            raise PlanError(str(error), "params") from None
    else:
        schedule, input_name = custom, "steps"
    message = recipes.check_custom_parameters(schedule.steps, schedule.base_steps, schedule.base_rho,
                                              schedule.end_index, schedule.time_rho, denoise)
    if message:
        raise PlanError(message, message.split(" ", 1)[0])
    inputs = _inputs(recipe, params, custom, denoise)
    problem = schedule_problem(schedule.sigmas(STANDARD_TABLE, denoise), final_zero=schedule.end_zero)
    if problem:
        raise PlanError(f"{inputs} give a schedule that cannot be sampled: {problem}. {_hint(schedule, denoise)}",
                        input_name)
    table = sigma_table() if callable(sigma_table) else sigma_table
    table = STANDARD_TABLE if table is None else table
    sigmas = schedule.sigmas(table, denoise)
    problem = None if table is STANDARD_TABLE else schedule_problem(sigmas, final_zero=schedule.end_zero)
    if problem:  # the inputs passed on the standard table; this model's table (e.g. lcm) differs
        lowest = float(table[0])
        last = float(sigmas[-2 if schedule.end_zero else -1])  # the last evaluated sigma with end=0
        floor = (f" This model has no sigma below {lowest:.4g} (lcm sampling: no timestep below 19), so the "
                 "steps below it repeat it." if last <= lowest * (1 + 1e-6) else "")
        raise PlanError(f"{inputs} give a schedule that cannot be sampled on this model's noise schedule (sigma "
                        f"{lowest:.4g} to {float(table[-1]):.4g}): {problem}.{floor} {_hint(schedule, denoise)}",
                        input_name)
    solver = params_solver(schedule)
    windows = recipe_windows(named.freeu) if named is not None and freeu == FREEU_RECIPE else ()
    return Plan(recipe, schedule, denoise, sigmas, solver, windows)


def plan_problem(recipe: str, denoise: float = 1.0, params: str | None = "", custom: ScheduleParams | None = None,
                 freeu: str = FREEU_RECIPE) -> str | None:
    """What ``make_plan`` would refuse (on the standard table), or None: a node's VALIDATE_INPUTS.

    ``params`` is None when it is linked (CURRENT passes None for a link; PINNED leaves it out, so it is ""):
    with ``custom`` the schedule is then known only when the node runs, which checks it; the rest is checked now.
    """
    try:
        if params is None and recipe == CUSTOM:
            _choose("freeu", freeu, FREEU_CHOICES)
            low, high = recipes.DENOISE_RANGE
            if not low <= denoise <= high:
                raise PlanError(f"denoise = {denoise} is out of range: allowed {low} to {high}", "denoise")
            return None
        make_plan(recipe, denoise, params or "", custom, freeu)
    except PlanError as error:
        return str(error)
    return None


def steps_plan(steps: int, sigma_table: torch.Tensor, family: str = "sd") -> Plan:
    """The plan of the ``fewstep`` KSampler scheduler, which knows only a step count: the recipe ``family`` of
    ``recipes.recipe_for_step_count`` on the model's table (any count; PlanError naming ``steps`` if its
    schedule cannot be sampled)."""
    recipe: Recipe = recipe_for_step_count(steps, family)
    schedule = ScheduleParams.from_recipe(recipe)
    sigmas = schedule.sigmas(sigma_table)
    problem = schedule_problem(sigmas, final_zero=schedule.end_zero)
    if problem:
        raise PlanError(problem, "steps")
    return Plan(recipe.name, schedule, 1.0, sigmas, solver_named(recipe.solver), ())


def _inputs(recipe: str, params: str, custom: ScheduleParams | None, denoise: float) -> str:
    """The inputs a schedule came from, named as on the node."""
    if recipe != CUSTOM:
        return f"recipe = {recipe!r} and denoise = {denoise}"
    if params.strip():
        return f"params = {params.strip()!r} and denoise = {denoise}"
    c = custom
    return (f"steps = {c.steps}, base_steps = {c.base_steps}, base_rho = {c.base_rho}, end_index = {c.end_index}, "
            f"time_rho = {c.time_rho} and denoise = {denoise}")


def _hint(p: ScheduleParams, denoise: float) -> str:
    """Where the schedule's steps run in timestep space, and which inputs widen or even them out."""
    timesteps = fewstep_timesteps(p.steps, p.base_steps, p.base_rho, p.end_index, p.time_rho, denoise, p.ramp)
    return (f"Its {p.steps} steps run from timestep {round(float(timesteps[0]), 3):g} down to "
            f"{round(float(timesteps[-1]), 3):g} "
            f"(time_rho = {p.time_rho}): use fewer steps, a time_rho nearer 1, a longer span (a larger denoise; an "
            "end further from 999: a larger end_index or base_rho; an end above 0: end_index below base_steps - 1)"
            + (", or ramp values further apart" if p.ramp else "") + ".")
