"""What the schedule graph on Few-Step Sigmas / Few-Step KSampler draws of a plan (js/fewstep_sigmas.js).

One builder for both sources of the graph, so they say the same: ``GET /fewstep/schedule`` (nodes/routes.py, the
preview before a run, on the standard SD table or a flow axis) and the ``ui`` the two nodes return when they run
(on the model's own table, the schedule they actually sampled). The reply's fields are described in routes.py.
"""

from __future__ import annotations

from ..fewstep.learned import model_sigma
from ..fewstep.noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS
from ..fewstep.plan import FreeUWindow, Plan, Solver
from ..fewstep.schedule import STANDARD_TABLE, continuous_timestep
from ..fewstep.solver_names import UNIPC_SOLVERS
from ..fewstep.unipc import afs_midpoint, resolve_order
from ..fewstep.window import Window, empty_window_message, percent_to_sigma

PARAMETERS = ("steps", "base_steps", "base_rho", "end_index", "time_rho")  # what a named recipe fixes
AXIS_SD, AXIS_FLOW, AXIS_CONTINUOUS = "sd", "flow", "continuous"  # the reply's axis kinds
SD_AXIS = {"kind": AXIS_SD}
UI_KEY = "fewstep_schedule"  # the nodes' ui: {UI_KEY: [schedule_body(...)]} (ComfyUI merges ui values as lists)
NO_FREEU_ON_FLOW = ("Timed FreeU: flow models (SD3, Flux, ...) are DiTs without a UNet decoder; FreeU passes them "
                    "through unchanged")

_STANDARD_LIST = STANDARD_TABLE.tolist()


def schedule_body(plan: Plan, table=STANDARD_TABLE, axis: dict = SD_AXIS, windows=()) -> dict:
    """The graph's reply for ``plan`` made on ``table`` (the model's sigma at each training timestep) on ``axis``
    (``{"kind": "sd"}``, ``{"kind": "flow", "shift"}`` or ``{"kind": "continuous", ...}``); ``windows``: the Timed
    FreeU windows (first_step, last_step, start_percent, end_percent) to place on its steps."""
    flow = axis["kind"] == AXIS_FLOW
    sigmas = plan.sigmas
    timesteps = continuous_timestep(sigmas.to(table.dtype), table)
    used = plan.schedule  # a named recipe's or a params string's, not the custom widgets', when they replace them
    nfe = len(sigmas) - 1
    body = {
        "recipe": plan.recipe,
        "params": {**{name: getattr(used, name) for name in PARAMETERS}, "denoise": plan.denoise},
        "solver": used.solver,
        "sigmas": sigmas.tolist(),
        "timesteps": [round(t, 3) for t in timesteps.tolist()],
        "nfe": nfe,
        "end": used.end,
        "axis": dict(axis),
    }
    schedule_list = sigmas.tolist()
    noise_form = NOISE_FORM_CONST if flow else NOISE_FORM_EPS
    body.update(_evaluations(body["solver"], sigmas, timesteps, plan.solver, table, noise_form))
    body.update(_learned(used, body["evaluations"], noise_form))
    table_list = _STANDARD_LIST if table is STANDARD_TABLE else None

    def steps_of(first, last, start=0.0, end=1.0):  # the evaluations where a Timed FreeU window is on
        nonlocal table_list
        if flow:
            return []
        table_list = table_list or table.tolist()
        window = Window(first, last, percent_to_sigma(start, table_list), percent_to_sigma(end, table_list))
        return [k for k, sigma in enumerate(body["evaluations"], 1) if window.active(sigma, schedule_list)]

    body["recipe_freeu"] = [_recipe_freeu(f, steps_of(f.first_step, f.last_step)) for f in plan.freeu]
    if windows:
        body["freeu"] = []
        for first, last, start, end in windows:
            entry = {"first_step": first, "last_step": last, "start_percent": start, "end_percent": end,
                     "steps": steps_of(first, last, start, end)}
            warning = NO_FREEU_ON_FLOW if flow else empty_window_message(first, last, nfe)
            if warning:
                entry["warning"] = warning if flow else f"Timed FreeU: {warning}"
            body["freeu"].append(entry)
    if flow:
        for entry in body["recipe_freeu"]:
            entry["warning"] = NO_FREEU_ON_FLOW
    return body


def schedule_ui(plan: Plan, table, axis: dict) -> dict:
    """The ``ui`` a node returns with its result: the schedule it sampled, on its model's axis, for the graph."""
    return {UI_KEY: [schedule_body(plan, table, axis)]}


def _recipe_freeu(freeu: FreeUWindow, steps: list[int]) -> dict:
    """One of the FreeU windows Few-Step KSampler applies with ``freeu = recipe``, as the reply lists it."""
    return {"b1": freeu.b1, "b2": freeu.b2, "s1": freeu.s1, "s2": freeu.s2, "first_step": freeu.first_step,
            "last_step": freeu.last_step, "steps": steps}


def _learned(used, evaluations: list[float], noise_form: str) -> dict:
    """``learned`` (which learned numbers the params text carries: "weights", "model time") and ``model_time``: per
    evaluation whose model time moves the sigma the network is told (delta not 0; on a flow axis not at sigma 1),
    {evaluation (1-based), sigma, told, delta}."""
    found = {}
    kinds = [name for name, value in (("weights", used.weights), ("model time", used.model_time)) if value is not None]
    if kinds:
        found["learned"] = kinds
    if used.model_time is not None:
        told = [(k, sigma, model_sigma(sigma, delta, noise_form), delta)
                for k, (sigma, delta) in enumerate(zip(evaluations, used.model_time), 1)]
        found["model_time"] = [{"evaluation": k, "sigma": sigma, "told": moved, "delta": delta}
                               for k, sigma, moved, delta in told if moved != sigma]
    return found


def _evaluations(solver: str | None, sigmas, timesteps, options: Solver, table=STANDARD_TABLE,
                 noise_form: str = NOISE_FORM_EPS) -> dict:
    """``evaluations``; for UniPC, ``unipc``; with the analytical first step (unipc_afs, or afs=1 in a DPM++ params
    text), ``afs_midpoint`` on ``table`` (see nodes/routes.py)."""
    values = sigmas.tolist()
    nfe = len(values) - 1
    afs = options.afs  # unipc_afs, or a DPM++ params text with afs=1
    if solver not in UNIPC_SOLVERS and not afs:
        return {"evaluations": values[:-1]}
    found = {}
    if solver in UNIPC_SOLVERS:
        found["unipc"] = {"solver": solver, "order": resolve_order(options.order, nfe), "variant": options.variant,
                          "afs": afs}
    if not afs:
        return {**found, "evaluations": values[:-1]}
    # the sampler inserts the midpoint in the schedule's dtype (fewstep.unipc.afs_schedule)
    middle = sigmas.new_tensor(afs_midpoint(values[0], values[1], table, noise_form)).item()
    t0, t1 = continuous_timestep(sigmas[:2].to(table.dtype), table).tolist()
    found["afs_midpoint"] = {"sigma": middle, "timestep": round((t0 + t1) / 2.0, 3)}
    return {**found, "evaluations": [middle, *values[1:-1]]}
