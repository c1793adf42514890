"""A schedule's parameters as one line of text, the form the schedule tuner outputs and Few-Step Sigmas reads.

    fewstep v1: steps=5 base_steps=8 base_rho=5.4 end_index=6 time_rho=1.31 ramp=0.17,0.38,0.6,0.81 solver=dpmpp_2m

steps .. time_rho are the custom recipe (see ``recipes.py``). ``ramp`` (optional) holds the positions
of the N-1 interior steps in the Karras spacing of timestep space (even spacing j/N when absent).
``solver`` (optional) is the solver the schedule was tuned for and that Few-Step KSampler samples it with;
``variant`` (bh1 / bh2) and ``order`` (auto / 1 / 2 / 3) refine a UniPC solver (the recipes' bh1 / auto when
absent). ``end`` (optional): ``index`` (the default, the paper's early stop at base sigma ``end_index``) or
``0``: the same N evaluations at the same sigmas, but the last step goes to sigma 0 (the data prediction)
instead of stopping at the end sigma. ``weights`` (optional, solver dpmpp_1s / dpmpp_2m): per step, offsets
from the solver's own weights on the step's data prediction and up to two earlier ones (``learned.py``), steps
separated by ',' and a step's offsets by ':' (step i has at most i of them; missing ones are 0), each within
+-2, e.g. ``weights=0.1,0.05:-0.2,0:0.3:-0.1``. ``afs`` (optional, ``1`` with solver dpmpp_1s / dpmpp_2m; ``0``,
the default, is not written): the analytical first step, as unipc_afs takes it (the first data prediction estimated
from the latent, a sigma inserted between the first two): one more step for the same N evaluations, so ``weights``
then has N+1 groups. ``prediction`` (optional, ``noise`` with solver dpmpp_1s / dpmpp_2m; ``data``, the default, is
not written): the steps weigh noise predictions instead of data predictions (DPM-Solver's form; UniPC as the
recipes run it is this with the offsets ``tuner_learn.equivalent_offsets`` reads off it). ``model_time``
(optional, any solver): per model evaluation, the shift delta of the time the network is told (sigma e^delta in
the eps form), each within +-0.5. Absent optional keys are not written, so older texts read the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import recipes
from .learned import MODEL_TIME_LIMIT, WEIGHT_LIMIT, Weights, model_time_problem, weights_problem
from .recipes import Recipe
from .schedule import check_ramp, fewstep_sigmas
from .solver_names import SCHEDULE_SOLVERS, SOLVERS, UNIPC_SOLVERS
from .unipc import ORDERS, PREDICTIONS, VARIANTS

PREFIX = "fewstep v1:"
REQUIRED = ("steps", "base_steps", "base_rho", "end_index", "time_rho")
KEYS = (*REQUIRED, "ramp", "solver", "variant", "order", "end", "afs", "prediction", "weights", "model_time")
AFS_VALUES = ("0", "1")
PREDICTION_DATA = PREDICTIONS[1]  # "data": the DPM++ steps' own prediction
END_AT_INDEX = "index"  # the paper's early stop: the last sigma is base sigma end_index's (above 0)
END_AT_ZERO = "0"  # the same evaluations, the last step to sigma 0
ENDS = (END_AT_INDEX, END_AT_ZERO)
EXAMPLE = "fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2"
ALLOWED = (f"allowed: '{PREFIX}' followed by key=value pairs separated by spaces; required keys "
           f"{', '.join(REQUIRED)}; optional ramp (N-1 comma-separated values increasing strictly inside "
           f"(0, 1)), solver ({', '.join(SCHEDULE_SOLVERS)}), variant ({', '.join(VARIANTS)}) and order "
           f"({', '.join(ORDERS)}) with a unipc solver, end ({' or '.join(ENDS)}), afs (0 or 1) and prediction "
           f"(data or noise) with solver {' or '.join(SOLVERS)}, weights (with solver {' or '.join(SOLVERS)}: per "
           f"step ':'-separated offsets within +-{WEIGHT_LIMIT:g}, steps separated by ','; one more step with afs=1) "
           f"and model_time (one value within +-{MODEL_TIME_LIMIT:g} per step, comma-separated); for example "
           f"'{EXAMPLE}'")


class ParamsError(ValueError):
    """A malformed parameter string; the message names ``params`` and says what is allowed."""


@dataclass(frozen=True)
class ScheduleParams:
    """A custom schedule: the recipe parameters and, optionally, free positions of the interior steps."""

    steps: int
    base_steps: int
    base_rho: float
    end_index: int
    time_rho: float
    ramp: tuple[float, ...] | None = None
    solver: str | None = None
    variant: str | None = None
    order: str | None = None
    end: str = END_AT_INDEX
    weights: Weights | None = None  # offsets from the solver's weights per step (learned.py)
    model_time: tuple[float, ...] | None = None  # per model evaluation, the shift of the time the network is told
    afs: bool = False  # DPM++ with the analytical first step (one more step, the same evaluations)
    prediction: str = PREDICTION_DATA  # DPM++: the weighted steps weigh data or noise predictions

    @property
    def sets_solver_fields(self) -> bool:
        """Whether the text sets a field the DPM++ sampler reads from it (weights, model_time, afs, prediction)."""
        return (self.weights is not None or self.model_time is not None or self.afs
                or self.prediction != PREDICTION_DATA)

    @property
    def end_zero(self) -> bool:
        """Whether the last step goes to sigma 0 (``end=0``)."""
        return self.end == END_AT_ZERO

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "ScheduleParams":
        return cls(recipe.steps, recipe.base_steps, recipe.base_rho, recipe.end_index, recipe.time_rho, recipe.ramp,
                   recipe.solver, recipe.variant, recipe.order, recipe.end)

    def sigmas(self, sigma_table: torch.Tensor, denoise: float = 1.0) -> torch.Tensor:
        """The N+1 sigmas of this schedule on a model's sigma table (see ``schedule.fewstep_sigmas``)."""
        return fewstep_sigmas(sigma_table, self.steps, self.base_steps, self.base_rho, self.end_index,
                              self.time_rho, denoise, self.ramp, self.end_zero)

    def problem(self) -> str | None:
        """Message naming the first invalid field, or None."""
        message = recipes.check_custom_parameters(self.steps, self.base_steps, self.base_rho, self.end_index,
                                                  self.time_rho)
        if message:
            return message
        if self.ramp is not None:
            message = check_ramp(self.ramp, self.steps)
            if message:
                return message
        if self.solver is not None and self.solver not in SCHEDULE_SOLVERS:
            return f"solver = {self.solver!r} is not one of {list(SCHEDULE_SOLVERS)}"
        for key, value, allowed in (("variant", self.variant, VARIANTS), ("order", self.order, ORDERS)):
            if value is None:
                continue
            if value not in allowed:
                return f"{key} = {value!r} is not one of {list(allowed)}"
            if self.solver not in UNIPC_SOLVERS:
                return f"{key} = {value} refines UniPC: it needs solver = {' or '.join(UNIPC_SOLVERS)}"
        if self.end not in ENDS:
            return f"end = {self.end!r} is not one of {list(ENDS)}"
        if self.afs and self.solver not in SOLVERS:
            hint = " (UniPC's is solver=unipc_afs)" if self.solver in UNIPC_SOLVERS else ""
            return (f"afs = 1 is the DPM++ solvers' analytical first step: it needs solver = "
                    f"{' or '.join(SOLVERS)}{hint}")
        if self.prediction not in PREDICTIONS:
            return f"prediction = {self.prediction!r} is not one of {list(PREDICTIONS)}"
        if self.prediction != PREDICTION_DATA and self.solver not in SOLVERS:
            return (f"prediction = {self.prediction} sets what the DPM++ solvers' steps weigh: it needs solver = "
                    f"{' or '.join(SOLVERS)}")
        if self.weights is not None:
            if self.solver not in SOLVERS:
                return (f"weights are offsets from a DPM++ solver's own weights: they need solver = "
                        f"{' or '.join(SOLVERS)} (got {self.solver})")
            message = weights_problem(self.weights, self.steps, afs=self.afs)
            if message:
                return message
        if self.model_time is not None:
            return model_time_problem(self.model_time, self.steps)
        return None


def _number(value: float) -> str:
    return format(value, ".6g")


def _short(value: float) -> str:
    return format(value, ".4g").replace("e-0", "e-")


def _trimmed(group: tuple[float, ...]) -> tuple[float, ...]:
    """A step's offsets without trailing zeros (at least one value)."""
    kept = list(group)
    while len(kept) > 1 and kept[-1] == 0.0:
        kept.pop()
    return tuple(kept)


def format_params(params: ScheduleParams) -> str:
    """The one-line text form of ``params`` (floats to 6 significant digits; parse_params reads it back)."""
    fields = [f"steps={params.steps}", f"base_steps={params.base_steps}", f"base_rho={_number(params.base_rho)}",
              f"end_index={params.end_index}", f"time_rho={_number(params.time_rho)}"]
    if params.ramp is not None:
        fields.append("ramp=" + ",".join(_number(v) for v in params.ramp))
    if params.solver is not None:
        fields.append(f"solver={params.solver}")
    fields += [f"{key}={value}" for key, value in (("variant", params.variant), ("order", params.order)) if value]
    if params.end_zero:
        fields.append(f"end={params.end}")
    if params.afs:
        fields.append("afs=1")
    if params.prediction != PREDICTION_DATA:
        fields.append(f"prediction={params.prediction}")
    if params.weights is not None:
        fields.append("weights=" + ",".join(":".join(_short(v) for v in _trimmed(group)) for group in params.weights))
    if params.model_time is not None:
        fields.append("model_time=" + ",".join(_short(v) for v in params.model_time))
    return f"{PREFIX} " + " ".join(fields)


def rounded(params: ScheduleParams) -> ScheduleParams:
    """``params`` as its text form stores them, so a schedule and its string give the same sigmas."""
    return parse_params(format_params(params))


def parse_params(text: str) -> ScheduleParams:
    """Read a string written by ``format_params`` (or by hand); ParamsError naming ``params`` if malformed."""
    def fail(problem: str) -> ParamsError:
        return ParamsError(f"params: {problem}; {ALLOWED}")

    text = text.strip()
    if not text.startswith(PREFIX):
        raise fail(f"{text[:40]!r} does not start with {PREFIX!r}")
    values: dict[str, str] = {}
    for token in text[len(PREFIX):].split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise fail(f"{token!r} is not key=value")
        if key not in KEYS:
            raise fail(f"unknown key {key!r}")
        if key in values:
            raise fail(f"{key} is given twice")
        values[key] = value
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    try:
        ints = {k: int(values[k]) for k in ("steps", "base_steps", "end_index")}
    except ValueError as error:
        raise fail(f"steps, base_steps and end_index must be whole numbers ({error})") from None
    try:
        floats = {k: float(values[k]) for k in ("base_rho", "time_rho")}
        ramp = tuple(float(v) for v in values["ramp"].split(",")) if "ramp" in values else None
    except ValueError as error:
        raise fail(f"base_rho, time_rho and ramp must be numbers ({error})") from None
    if not all(math.isfinite(v) for v in floats.values()):
        raise fail("base_rho and time_rho must be finite")
    try:
        weights = (tuple(tuple(float(v) for v in group.split(":")) for group in values["weights"].split(","))
                   if "weights" in values else None)
    except ValueError as error:
        raise fail(f"weights must be numbers, ':' between a step's offsets and ',' between steps ({error})") from None
    try:
        model_time = tuple(float(v) for v in values["model_time"].split(",")) if "model_time" in values else None
    except ValueError as error:
        raise fail(f"model_time must be comma-separated numbers ({error})") from None
    if values.get("afs", "0") not in AFS_VALUES:
        raise fail(f"afs = {values['afs']!r} is not one of {list(AFS_VALUES)}")
    params = ScheduleParams(ints["steps"], ints["base_steps"], floats["base_rho"], ints["end_index"],
                            floats["time_rho"], ramp, values.get("solver"), values.get("variant"),
                            values.get("order"), values.get("end", END_AT_INDEX), weights, model_time,
                            values.get("afs") == "1", values.get("prediction", PREDICTION_DATA))
    problem = params.problem()
    if problem:
        raise fail(problem)
    return params
