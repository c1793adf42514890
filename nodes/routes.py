"""HTTP route that serves the Few-Step Sigmas schedule to the graph editor (js/fewstep_sigmas.js).

``GET /fewstep/schedule?recipe=..&denoise=..&steps=..&base_steps=..&base_rho=..&end_index=..&time_rho=..``
takes the node's widget inputs (names and types read from its INPUT_TYPES; required ones must be
given) and answers with the schedule the node would produce on the standard SD1.x / SDXL discrete
schedule: the node's own plan (``sigmas.sigmas_plan``, i.e. ``fewstep.plan.make_plan``), refused with the
node's own message when the plan is:

    {"recipe": str, "params": {steps, base_steps, base_rho, end_index, time_rho, denoise},
     "solver": str | null, "sigmas": [N+1 floats], "timesteps": [N+1 floats], "nfe": N, "end": "index" | "0"}

``params`` are the values used (a named recipe's own, not the custom widgets'); ``solver`` is the
recipe's suggested one (null for ``custom``); ``timesteps`` are the fractional timesteps of the
sigmas to 3 decimals (log-sigma interpolation, what the paper's reference gives the UNet). Optional
``freeu`` parameters ("first_step,last_step" or "first_step,last_step,start_percent,end_percent",
repeatable, as on Timed FreeU) add ``"freeu": [{first_step, last_step, start_percent, end_percent,
steps: [1-based steps where that Timed FreeU is on], warning?}]`` (percents as ComfyUI maps them to sigmas
on the same standard table; ``warning``, only when present, says that the step window selects no step of
this schedule). ``end`` is the schedule's ``end`` (``params`` ``end=0``: the last sigma is 0, reached by the
last evaluation's data prediction, no extra evaluation).

Every reply also says where the suggested solver evaluates the model (with ``finish`` last_sigma):
``"evaluations": [N sigmas, in order]``, sigma_0 .. sigma_{N-1} (the last sigma is reached without one).
For a solver of ``fewstep.solver_names.UNIPC_SOLVERS`` (a UniPC recipe, or a ``params`` string naming one) it
adds ``"unipc": {"solver", "order", "variant", "afs"}``: the order the plan's (``auto`` unless a params text
sets ``order``) resolves to for N evaluations (``fewstep.unipc.resolve_order``), the variant and whether the
analytical first step is on. With it (``unipc_afs``, or ``afs=1`` in a params text naming a DPM++ solver)
it adds ``"afs_midpoint": {"sigma", "timestep"}``, the sigma AFS inserts between sigma_0 and sigma_1
(``fewstep.unipc.afs_midpoint`` on the standard table, in the sigmas' float32, as the sampler steps through it)
and its fractional timestep (the midpoint of theirs); sigma_0 is then not evaluated (its
model output is estimated analytically) and ``evaluations`` are the midpoint, sigma_1 .. sigma_{N-1}.
Steps are numbered by model evaluation (step k = the k-th evaluation, as Timed FreeU counts them, see
``nodes/comfy_api.py``), so ``freeu[].steps`` keeps its meaning; a window's percents are checked at each
step's evaluated sigma (with AFS the midpoint for step 1), as Timed FreeU does.

A ``params`` text with learned numbers (the tuner's ``learn``: ``weights=``, ``model_time=``) adds ``"learned":
["weights", "model time"]`` (those it carries) and, with ``model_time``, ``"model_time": [{evaluation, sigma, told,
delta}]`` for every evaluation whose model time moves the sigma the network is told: at the evaluation's own sigma it
is told ``told`` (sigma e^delta; in the const form the odds sigma / (1 - sigma) times e^delta, and sigma 1 stays 1:
``fewstep.learned.model_sigma``).

Few-Step KSampler (js/fewstep_sigmas.js draws the graph on it too) has the same ``recipe``, ``denoise`` and
``params`` but no custom widgets (steps, base_steps, base_rho, end_index, time_rho): it sends only those three.
The custom widgets are therefore required only for ``recipe=custom`` without a ``params`` string; otherwise a
missing one takes its default on Few-Step Sigmas (a named recipe or a ``params`` string replaces them anyway,
so the schedule is the one the KSampler samples). Every reply also lists the FreeU the KSampler applies with
its ``freeu = recipe`` (the plan's ``freeu``: a named recipe's own settings, none for ``custom``):
``"recipe_freeu": [{b1, b2, s1, s2, first_step, last_step, steps: [1-based evaluations where it is on]}]``,
steps counted as for ``freeu`` above (windows of whole steps, percents 0 to 1, as the KSampler patches them).
The KSampler's own ``freeu`` widget ("recipe" / "off") is not a query parameter: the page shows
``recipe_freeu`` or nothing, and never the Timed FreeU nodes of the graph (they do not patch its model).

``flow_shift`` (optional, a number above 0) puts the schedule on a flow model's time axis instead of the standard
SD one (docs/noise_forms.md): sigma(t) = shift t / (1 + (shift - 1) t) on the unshifted t = (timestep + 1) / 1000,
as Few-Step Sigmas gives it on SD3 (ModelSamplingSD3's shift, 3.0 by default), AuraFlow, or Flux (shift = e^mu of
ModelSamplingFlux). Then ``timesteps`` and ``afs_midpoint`` are read on that table (the midpoint in the const noise
form), the reply has ``"axis": {"kind": "flow", "shift": s}`` (else ``{"kind": "sd"}``), and no FreeU is on at any
step (``recipe_freeu`` and ``freeu`` list their windows with ``steps: []`` and a ``warning``): flow models are DiTs,
which Timed FreeU passes through unchanged.

The reply is made by ``nodes/schedule_graph.py``, which also makes the ``ui`` Few-Step Sigmas and Few-Step KSampler
return when they run: the same reply for the schedule they sampled, on the model's own table and axis (``"sd"``,
``"flow"`` with the model's shift, ``"continuous"`` with its sigma_min and sigma_max), which the graph draws after a
run.

A schedule that cannot be sampled (not strictly descending in float32, see
``fewstep.schedule.schedule_problem``) is refused by the plan like any bad input. A bad, missing or
unknown parameter gets HTTP
400 ``{"error": message}`` naming it (and its allowed range), never a traceback.
"""

from __future__ import annotations

import inspect
import math

from aiohttp import web

from ..fewstep.freeu import VERSIONS as VERSIONS_FREEU
from ..fewstep.plan import Plan, PlanError, freeu_window
from ..fewstep.recipes import CUSTOM
from ..fewstep.schedule import STANDARD_TABLE, flow_sigma_table
from .schedule_graph import AXIS_FLOW, PARAMETERS, SD_AXIS, schedule_body
from .sigmas import FewStepSigmas, sigmas_plan

SCHEDULE_PATH = "/fewstep/schedule"
FREEU = "freeu"
FLOW_SHIFT = "flow_shift"
PARSERS = {"INT": int, "FLOAT": float, "STRING": str}


class BadQuery(ValueError):
    """A query parameter that is missing, unknown or not a number; the message names it."""


async def get_schedule(request: web.Request) -> web.Response:
    """aiohttp handler of ``GET /fewstep/schedule``."""
    status, body = schedule_reply(request.query)
    return web.json_response(body, status=status)


def schedule_reply(query) -> tuple[int, dict]:
    """(HTTP status, JSON body) for a query mapping (``getall`` is used for repeated ``freeu``)."""
    try:
        inputs = _parse(query)
        windows = _parse_freeu(query.getall(FREEU, []) if hasattr(query, "getall") else query.get(FREEU, []))
        shift = _parse_shift(query.get(FLOW_SHIFT))
    except BadQuery as error:
        return 400, {"error": str(error)}
    table = STANDARD_TABLE if shift is None else flow_sigma_table(shift)
    try:
        plan: Plan = _call(sigmas_plan, {**inputs, "sigma_table": table})
    except PlanError as error:
        return 400, {"error": f"Few-Step Sigmas: {error}"}
    axis = SD_AXIS if shift is None else {"kind": AXIS_FLOW, "shift": shift}
    return 200, schedule_body(plan, table, axis, windows)


def widget_inputs() -> dict[str, tuple]:
    """The node's widget inputs, name -> (type, options, required): the route's query parameters."""
    types = FewStepSigmas.INPUT_TYPES()
    found = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in types.get(section, {}).items():
            kind = spec[0]
            if isinstance(kind, (list, tuple)) or kind in PARSERS:
                found[name] = (kind, spec[1] if len(spec) > 1 else {}, required)
    return found


def _call(function, arguments: dict):
    """Call ``function`` with the arguments it declares (as ComfyUI calls VALIDATE_INPUTS)."""
    accepted = inspect.signature(function).parameters
    return function(**{name: value for name, value in arguments.items() if name in accepted})


def _parse(query) -> dict:
    """The node's inputs from query strings; unknown names are refused, not ignored."""
    widgets = widget_inputs()
    unknown = sorted(set(query) - {*widgets, FREEU, FLOW_SHIFT})
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}; expected {', '.join(widgets)} and optionally {FREEU}, "
                       f"{FLOW_SHIFT}")
    inputs = {}
    # the custom widgets matter only for recipe=custom without params (Few-Step KSampler has none of them)
    custom = query.get("recipe") == CUSTOM and not str(query.get("params") or "").strip()
    for name, (kind, options, required) in widgets.items():
        text = query.get(name)
        if text is None or (text == "" and kind != "STRING"):
            if required and (name not in PARAMETERS or custom):
                extra = " (recipe = 'custom' without params needs it)" if name in PARAMETERS else ""
                raise BadQuery(f"{name} is missing{extra}")
            inputs[name] = options.get("default")
        elif isinstance(kind, (list, tuple)) or kind == "STRING":
            inputs[name] = text  # choices are checked by VALIDATE_INPUTS
        else:
            inputs[name] = _number(name, text, PARSERS[kind])
    return inputs


def _number(name: str, text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise BadQuery(f"{name} = {text[:40]!r} is not {what}") from None


def _parse_shift(text: str | None) -> float | None:
    """The ``flow_shift`` parameter: None (the standard SD axis) or a finite number above 0."""
    if text is None or text == "":
        return None
    shift = _number(FLOW_SHIFT, text, float)
    if not (math.isfinite(shift) and shift > 0.0):
        raise BadQuery(f"{FLOW_SHIFT} = {text[:40]!r} must be a number above 0 (SD3: its ModelSamplingSD3 shift, "
                       "3.0 by default; Flux: e^mu)")
    return shift


def _parse_freeu(values: list[str]) -> list[tuple[int, int, float, float]]:
    """(first_step, last_step, start_percent, end_percent) of each ``freeu`` parameter."""
    windows = []
    for text in values:
        parts = [part.strip() for part in text.split(",")]
        if len(parts) not in (2, 4):
            raise BadQuery(f"{FREEU} = {text[:40]!r} must be 'first_step,last_step' or "
                           "'first_step,last_step,start_percent,end_percent', e.g. '2,4' or '1,-1,0,0.6'")
        first, last = (_number(FREEU, part, int) for part in parts[:2])
        start, end = (_number(FREEU, part, float) for part in parts[2:]) if len(parts) == 4 else (0.0, 1.0)
        try:
            freeu_window(1.0, 1.0, 1.0, 1.0, VERSIONS_FREEU[0], first, last, start, end)
        except PlanError as error:
            raise BadQuery(f"{FREEU}: {error}") from None
        windows.append((first, last, start, end))
    return windows
