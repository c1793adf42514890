"""The schedule graph on Few-Step Sigmas: GET /fewstep/schedule on a real ComfyUI server, and
js/fewstep_sigmas.js in the pages that server can serve, in real headless Chromium (Debian's package,
driven by Playwright; no browser download): under PINNED its old LiteGraph page; under CURRENT
(COMFYUI_PATH) its own frontend 1.27.10 and the newest one, 1.58.1 (scripts/install_env.sh installs it
into <venv>/frontend-1.58.1), in classic mode and in Nodes 2.0 mode (Vue nodes). Each mode's tests
report the others as skipped with the ComfyUI they need. Screenshots go to
tests/artifacts/schedule_graph/<mode>/.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from afs_reference import evaluated_sigmas, midpoint
from build_thumbnails import CHROMIUM, CHROMIUM_ARGS, FIT
from build_thumbnails import SETTINGS as THUMBNAIL_SETTINGS
from conftest import REPO
from e2e_support import server_with_checkpoint
from workflow_api import to_api

from fewstep.recipes import CUSTOM, RECIPES
from fewstep.schedule import fewstep_sigmas, fewstep_timesteps, recipe_sigmas, standard_sigma_table
from fewstep.solvers import UNIPC_SOLVERS

WORKFLOW = REPO / "workflows" / "fewstep_sd15_5step.json"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ROUTE = "/fewstep/schedule"
# RECIPES.md sanity values of SD1.5 5-step, computed independently of this pack.
SD15_5STEP = [14.6146, 4.51885, 1.96154, 1.00098, 0.501515, 0.132002]
CUSTOM_WIDGETS = ("steps", "base_steps", "base_rho", "end_index", "time_rho")


def query(recipe="SD1.5 5-step", denoise=1.0, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2,
          **extra) -> str:
    fields = dict(recipe=recipe, denoise=denoise, steps=steps, base_steps=base_steps, base_rho=base_rho,
                  end_index=end_index, time_rho=time_rho, **extra)
    return urllib.parse.urlencode({k: v for k, v in fields.items() if v is not None}, doseq=True)


def python_schedule(recipe: str, custom=(5, 8, 5.0, 6, 1.2), denoise=1.0) -> list[float]:
    table = standard_sigma_table()
    if recipe == CUSTOM:
        return fewstep_sigmas(table, *custom, denoise=denoise).tolist()
    return recipe_sigmas(RECIPES[recipe], table, denoise).tolist()


def get(server, path: str):
    status, body = server.request("GET", path)
    return status, json.loads(body)


# ---- the route -----------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", [*RECIPES, CUSTOM])
def test_route_matches_the_node(server, comfy, tiny_model, recipe):
    custom = (7, 10, 6.0, 7, 1.3)
    status, reply = get(server, f"{ROUTE}?{query(recipe, 0.8, *custom)}")
    assert status == 200, reply
    node = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]()
    expected = node.get_sigmas(tiny_model, recipe, 0.8, *custom)[0]  # on the model's own sigma table
    assert reply["sigmas"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert reply["sigmas"] == python_schedule(recipe, custom, 0.8)
    used = RECIPES[recipe] if recipe != CUSTOM else None
    assert reply["recipe"] == recipe
    assert reply["nfe"] == len(expected) - 1 == (used.steps if used else custom[0])
    assert reply["solver"] == (used.solver if used else None)
    assert reply["params"] == {"steps": used.steps if used else 7, "base_steps": used.base_steps if used else 10,
                               "base_rho": used.base_rho if used else 6.0, "end_index": used.end_index if used else 7,
                               "time_rho": used.time_rho if used else 1.3, "denoise": 0.8}
    # timesteps: ComfyUI's own sigma(t) of the model gives the sigmas back
    model_sampling = tiny_model.model.model_sampling
    back = model_sampling.sigma(torch.tensor(reply["timesteps"], dtype=torch.float32))
    assert back.tolist() == pytest.approx(reply["sigmas"], rel=2e-4)


def test_route_sd15_5step_sanity_values_and_freeu_steps(server):
    status, reply = get(server, f"{ROUTE}?{query(freeu=['2,4', '-3,-1', '6,6', '1,-1,0.35,0.6', '4,5,0,0.5'])}")
    assert status == 200, reply
    assert reply["sigmas"] == pytest.approx(SD15_5STEP, rel=2e-5)
    assert reply["timesteps"][0] == pytest.approx(999, abs=1e-3) and reply["timesteps"][-1] > 1
    # percents: 0.35 is sigma 2.4..2.5 and 0.6 is 1.2..1.3 (ComfyUI's percent_to_sigma), so only step 3
    # (starting at 1.96) is inside; 0.5 is sigma ~1.7, so steps 4 and 5 (1.00, 0.50) are below it
    assert [w["steps"] for w in reply["freeu"]] == [[2, 3, 4], [3, 4, 5], [], [3], []]
    assert [(w["start_percent"], w["end_percent"]) for w in reply["freeu"]] == [(0, 1)] * 3 + [(0.35, 0.6), (0, 0.5)]


UNIPC_RECIPES = [name for name, r in RECIPES.items() if r.solver in UNIPC_SOLVERS]


@pytest.mark.parametrize("recipe", UNIPC_RECIPES)
def test_route_unipc_recipes_say_where_the_model_is_evaluated(server, recipe):
    """UniPC recipes: the solver settings, the AFS midpoint (tests/afs_reference.py, written from RECIPES.md)
    and the N evaluated sigmas; the recipe's own Timed FreeU window on its last evaluations."""
    r = RECIPES[recipe]
    windows = [f"{f.first_step},{f.last_step}" for f in r.freeu] + ["1,-1,0.05,1"]
    status, reply = get(server, f"{ROUTE}?{query(recipe, freeu=windows)}")
    assert status == 200, reply
    table = standard_sigma_table().tolist()
    sigmas = python_schedule(recipe)
    afs = r.solver == "unipc_afs"
    # the SDXL UniPC recipes use the analytical first step, and so do the flow ones (SD3.5, Flux)
    assert recipe.startswith(("SDXL", "SD3.5", "Flux")) == afs
    assert reply["sigmas"] == sigmas and reply["nfe"] == r.steps
    # order auto: 1 up to 6 evaluations, 2 from 7 (RECIPES.md); a tuned (flow) recipe may name its order and variant
    order = (1 if r.steps <= 6 else 2) if (r.order or "auto") == "auto" else int(r.order)
    assert reply["unipc"] == {"solver": r.solver, "order": order, "variant": r.variant or "bh1", "afs": afs}
    assert reply["evaluations"] == pytest.approx(evaluated_sigmas(sigmas, afs, table), rel=1e-6)
    assert len(reply["evaluations"]) == r.steps and sigmas[-1] not in reply["evaluations"]
    if afs:
        sigma, timestep = midpoint(sigmas[0], sigmas[1], table)
        assert reply["afs_midpoint"]["sigma"] == pytest.approx(sigma, rel=1e-6)
        assert reply["afs_midpoint"]["timestep"] == pytest.approx(timestep, abs=1e-3)
        assert sigmas[1] < sigma < sigmas[0] and reply["evaluations"][0] == reply["afs_midpoint"]["sigma"]
    else:
        assert "afs_midpoint" not in reply and reply["evaluations"] == sigmas[:-1]
    if r.freeu:  # FreeU on the last 3 (SDXL) or 2 (SD1.5) evaluations; the flow recipes have none (DiTs)
        last = 3 if recipe.startswith("SDXL") else 2
        assert reply["freeu"][0]["steps"] == list(range(r.steps - last + 1, r.steps + 1))
    # start_percent 0.05 is sigma ~11 (t ~949): below sigma_0, above the AFS midpoint (t ~902-928). With AFS
    # step 1 is evaluated at the midpoint, so the window holds there, as Timed FreeU decides it per evaluation.
    assert reply["freeu"][len(r.freeu)]["steps"] == list(range(1 if afs else 2, r.steps + 1))


def test_route_dpmpp_recipes_evaluate_every_sigma_but_the_last(server):
    status, reply = get(server, f"{ROUTE}?{query()}")
    assert reply["evaluations"] == python_schedule("SD1.5 5-step")[:-1]
    assert "unipc" not in reply and "afs_midpoint" not in reply


def test_route_params_naming_unipc_afs_gets_the_midpoint(server):
    params = "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 solver=unipc_afs"
    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=params)}")
    assert status == 200, reply
    sigmas = python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2))
    assert reply["sigmas"] == sigmas and reply["solver"] == "unipc_afs"
    assert reply["unipc"] == {"solver": "unipc_afs", "order": 2, "variant": "bh1", "afs": True}
    assert reply["evaluations"] == pytest.approx(evaluated_sigmas(sigmas, True, standard_sigma_table().tolist()),
                                                 rel=1e-6)


def test_route_params_with_dpmpp_afs_gets_the_midpoint(server):
    """A DPM++ text with afs=1 (the weighted solver's analytical first step): the midpoint and the evaluations there
    as for unipc_afs, no UniPC settings; without afs, every sigma but the last."""
    params = "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 solver=dpmpp_2m afs=1"
    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=params)}")
    assert status == 200, reply
    sigmas = python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2))
    assert reply["sigmas"] == sigmas and "unipc" not in reply and reply["nfe"] == 7
    table = standard_sigma_table().tolist()
    assert reply["afs_midpoint"]["sigma"] == pytest.approx(midpoint(sigmas[0], sigmas[1], table)[0], rel=1e-6)
    assert reply["evaluations"] == pytest.approx(evaluated_sigmas(sigmas, True, table), rel=1e-6)
    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=params.replace(' afs=1', ''))}")
    assert "afs_midpoint" not in reply and reply["evaluations"] == sigmas[:-1]


def test_route_params_end_zero_and_unipc_options(server):
    params = ("fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 solver=unipc variant=bh2 "
              "order=3 end=0")
    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=params)}")
    assert status == 200, reply
    sigmas = python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2))
    assert reply["sigmas"] == [*sigmas[:-1], 0.0] and reply["end"] == "0" and reply["nfe"] == 7
    assert reply["unipc"] == {"solver": "unipc", "order": 3, "variant": "bh2", "afs": False}
    assert reply["evaluations"] == sigmas[:-1]  # the last step to 0 costs no evaluation of its own
    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=params.replace(' end=0', ' end=zero'))}")
    assert status == 400 and "end = 'zero' is not one of ['index', '0']" in reply["error"]


def test_route_says_which_learned_numbers_a_params_text_carries_and_where_the_model_time_moves(server):
    """A learned text: ``learned`` names its kinds, ``model_time`` every evaluation whose delta is not 0, with the
    sigma the network is told there (sigma e^delta on the SD axis, the odds times e^delta on a flow axis)."""
    from fewstep.params import parse_params

    status, reply = get(server, f"{ROUTE}?{query(CUSTOM, params=LEARNED_PARAMS)}")
    assert status == 200, reply
    deltas = parse_params(LEARNED_PARAMS).model_time
    assert reply["learned"] == ["weights", "model time"] and reply["nfe"] == 5
    assert [t["evaluation"] for t in reply["model_time"]] == [1, 3, 4, 5]  # evaluation 2's delta is 0
    for t in reply["model_time"]:
        sigma = reply["evaluations"][t["evaluation"] - 1]
        assert t["sigma"] == sigma and t["delta"] == deltas[t["evaluation"] - 1]
        assert t["told"] == pytest.approx(sigma * math.exp(t["delta"]), rel=1e-12)
    status, flow = get(server, f"{ROUTE}?{query(CUSTOM, params=LEARNED_PARAMS)}&flow_shift=3")
    assert status == 200, flow
    assert flow["evaluations"][0] == 1.0  # a flow schedule starts at sigma 1, which no model time moves
    assert [t["evaluation"] for t in flow["model_time"]] == [3, 4, 5]
    for t in flow["model_time"]:
        odds = math.exp(t["delta"]) * t["sigma"] / (1 - t["sigma"])
        assert t["told"] == pytest.approx(odds / (1 + odds), rel=1e-12) and t["told"] < t["sigma"]
    status, plain = get(server, f"{ROUTE}?{query(CUSTOM, params=LEARNED_PARAMS.split(' weights=')[0])}")
    assert status == 200 and "learned" not in plain and "model_time" not in plain


def test_route_is_served_where_each_frontend_asks(server, comfy):
    # The old page calls /fewstep/schedule; the current one /api/fewstep/schedule (CURRENT only has /api/).
    paths = [ROUTE, "/api" + ROUTE] if comfy.current else [ROUTE]
    replies = [get(server, f"{path}?{query()}") for path in paths]
    assert all(status == 200 for status, _ in replies)
    assert all(reply == replies[0][1] for _, reply in replies)


def ksampler_query(recipe="SD1.5 5-step", denoise=1.0, params=None) -> str:
    """What Few-Step KSampler's graph sends: it has no custom widgets."""
    return urllib.parse.urlencode({k: v for k, v in dict(recipe=recipe, denoise=denoise, params=params).items()
                                   if v is not None})


def window_steps(first: int, last: int, n: int) -> list[int]:
    """The 1-based steps of n that a whole-step Timed FreeU window covers (negative: from the end)."""
    first, last = (first if first > 0 else n + 1 + first), (last if last > 0 else n + 1 + last)
    return list(range(max(first, 1), min(last, n) + 1))


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_route_serves_few_step_ksampler_with_the_recipe_freeu(server, recipe):
    """Few-Step KSampler sends recipe and denoise only: the same schedule, evaluations and AFS midpoint as Few-Step
    Sigmas' query, and the FreeU the KSampler applies (the recipe's own settings) with the steps they are on."""
    status, reply = get(server, f"{ROUTE}?{ksampler_query(recipe, 0.9)}")
    assert status == 200, reply
    status, sigmas_reply = get(server, f"{ROUTE}?{query(recipe, 0.9, 9, 14, 3.0, 11, 2.0)}")  # custom widgets ignored
    assert reply == sigmas_reply
    r = RECIPES[recipe]
    assert reply["sigmas"] == python_schedule(recipe, denoise=0.9) and reply["nfe"] == r.steps
    assert reply["recipe_freeu"] == [{"b1": f.b1, "b2": f.b2, "s1": f.s1, "s2": f.s2, "first_step": f.first_step,
                                      "last_step": f.last_step, "steps": window_steps(f.first_step, f.last_step,
                                                                                      r.steps)} for f in r.freeu]
    assert all(entry["steps"] for entry in reply["recipe_freeu"])
    assert "freeu" not in reply  # no Timed FreeU window was asked for


def test_route_ksampler_custom_uses_params_and_has_no_freeu(server):
    params = "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 solver=unipc_afs"
    status, reply = get(server, f"{ROUTE}?{ksampler_query(CUSTOM, params=params)}")
    assert status == 200, reply
    assert reply["sigmas"] == python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2)) and reply["solver"] == "unipc_afs"
    assert reply["recipe_freeu"] == [] and reply["afs_midpoint"]["sigma"] == reply["evaluations"][0]
    status, reply = get(server, f"{ROUTE}?{ksampler_query(CUSTOM)}")  # custom, no params, no widgets
    assert status == 400 and "steps is missing (recipe = 'custom' without params needs it)" in reply["error"]


BAD = [
    ({"recipe": CUSTOM, "steps": None}, "steps is missing (recipe = 'custom' without params needs it)"),
    ({"steps": "five"}, "steps = 'five' is not an integer"),
    ({"steps": "5.5"}, "steps = '5.5' is not an integer"),
    ({"denoise": "lots"}, "denoise = 'lots' is not a number"),
    ({"recipe": "SD9 1-step"}, "recipe = 'SD9 1-step' is not one of"),
    ({"recipe": CUSTOM, "steps": 0}, "steps = 0 is out of range: allowed 1 to 100"),
    ({"recipe": CUSTOM, "end_index": 8}, "end_index = 8 is out of range: allowed 1 to 7 (it must be below base_steps)"),
    ({"recipe": CUSTOM, "base_rho": "nan"}, "base_rho = nan is out of range: allowed 0.1 to 50.0"),
    ({"recipe": CUSTOM, "time_rho": "inf"}, "time_rho = inf is out of range: allowed 0.1 to 10.0"),
    ({"denoise": 0}, "denoise = 0.0 is out of range: allowed 0.01 to 1.0"),  # checked for named recipes too
    ({"stepz": 5}, "unknown parameter 'stepz'"),
    ({"freeu": "2"}, "freeu = '2' must be 'first_step,last_step'"),
    ({"freeu": "0,3"}, "first_step = 0 is out of range: allowed 1 to 100"),
    ({"freeu": "1,-1,0.7"}, "freeu = '1,-1,0.7' must be 'first_step,last_step' or"),
    ({"freeu": "1,-1,0.7,0.2"}, "start_percent = 0.7 must not be above end_percent = 0.2"),
    ({"freeu": "1,-1,0,1.5"}, "end_percent = 1.5 is out of range: allowed 0.0 to 1.0"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(" ")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_route_rejects_bad_values_with_a_message(server, change, message):
    fields = {"recipe": "SD1.5 5-step", "denoise": 1.0, "steps": 5, "base_steps": 8, "base_rho": 5.0, "end_index": 6,
              "time_rho": 1.2, **change}
    status, reply = get(server, f"{ROUTE}?{urllib.parse.urlencode({k: v for k, v in fields.items() if v is not None})}")
    assert status == 400
    assert set(reply) == {"error"} and message in reply["error"]
    assert "Traceback" not in reply["error"]


def test_server_still_serves_after_bad_requests(server):
    for bad in ("steps=x", "", query(recipe=CUSTOM, base_steps=2, end_index=5)):
        assert server.request("GET", f"{ROUTE}?{bad}")[0] == 400
    assert server.alive()
    assert get(server, f"{ROUTE}?{query()}")[1]["sigmas"] == python_schedule("SD1.5 5-step")
    assert "FewStepSigmas" in server.object_info()


def test_every_widget_of_the_node_reaches_its_schedule(comfy):
    # The route forwards the node's widget inputs (read from INPUT_TYPES) to the node's own plan (sigmas_plan);
    # a widget that sigmas_plan() does not take would be silently left out of the graph.
    package = comfy.pack.__name__
    routes = importlib.import_module(f"{package}.nodes.routes")
    sigmas = importlib.import_module(f"{package}.nodes.sigmas")
    widgets = set(routes.widget_inputs())
    assert {"recipe", "denoise", *CUSTOM_WIDGETS} <= widgets
    assert widgets <= set(inspect.signature(sigmas.sigmas_plan).parameters)


# ---- after a run: the schedule the node sampled, in its ui (in process) -----------------------------

UI_KEY = "fewstep_schedule"


def executed(comfy, node_id: str, inputs: dict) -> tuple[list, dict]:
    """(outputs, ui) of a node as this ComfyUI's own executor collects them (``execution.get_output_data``: a plain
    function in PINNED, a coroutine with the prompt and node ids in CURRENT)."""
    import execution

    node_class = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
    data = {name: [value] for name, value in inputs.items()}
    if "prompt_id" in inspect.signature(execution.get_output_data).parameters:
        output, ui, *_ = comfy.run(execution.get_output_data("prompt", "7", node_class(), data))
    else:
        output, ui = execution.get_output_data(node_class(), data)
    return output, ui


def assert_same_reply(got, expected, rel: float = 1e-5, where: str = "reply") -> None:
    """Equal JSON replies, floats to ``rel`` (a model's own float32 table against the standard float64 one) and
    timesteps to 0.002."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), (where, sorted(got), sorted(expected))
        for key in expected:
            assert_same_reply(got[key], expected[key], rel, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (where, got, expected)
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_reply(a, b, rel, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        tolerance = dict(abs=2e-3) if "timestep" in where else dict(rel=rel)
        assert got == pytest.approx(expected, **tolerance), (where, got, expected)
    else:
        assert got == expected, (where, got, expected)


@pytest.mark.parametrize("recipe, params", [("SD1.5 5-step", ""), ("SDXL 6-step UniPC", ""), (CUSTOM, ""),
                                            (CUSTOM, "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 "
                                                     "time_rho=1.2 solver=unipc_afs end=0")])
def test_few_step_sigmas_ui_is_the_route_reply_on_an_sd_model(comfy, tiny_model, recipe, params):
    """Run through ComfyUI's executor, Few-Step Sigmas returns its SIGMAS and, in its ui, the schedule it sampled:
    on an SD1.5 model (the standard table) the route's reply for the same inputs, axis "sd"."""
    routes = importlib.import_module(f"{comfy.pack.__name__}.nodes.routes")
    custom = (7, 10, 6.0, 7, 1.3)
    inputs = dict(zip(("recipe", "denoise", *CUSTOM_WIDGETS, "params"), (recipe, 0.8, *custom, params)))
    output, ui = executed(comfy, "FewStepSigmas", {"model": tiny_model, **inputs})
    (sigmas,) = output[0]
    assert list(ui) == [UI_KEY] and len(ui[UI_KEY]) == 1
    payload = ui[UI_KEY][0]
    json.dumps(payload)  # what the server sends
    status, reply = routes.schedule_reply({name: str(value) for name, value in inputs.items()})
    assert status == 200, reply
    assert_same_reply(payload, reply)
    assert payload["axis"] == {"kind": "sd"} and payload["sigmas"] == sigmas.tolist()
    assert torch.equal(sigmas, comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]().get_sigmas(
        tiny_model, *inputs.values())[0])  # the Python API keeps its tuple


@pytest.mark.parametrize("freeu", ["recipe", "off"])
def test_few_step_ksampler_ui_is_the_route_reply_on_an_sd_model(comfy, tiny_model, conds, freeu):
    """Few-Step KSampler, run through ComfyUI's executor: its two latents, and in its ui the schedule it sampled (the
    route's reply to the KSampler's query; recipe_freeu lists the FreeU it applied: none with freeu = off)."""
    routes = importlib.import_module(f"{comfy.pack.__name__}.nodes.routes")
    inputs = {"model": tiny_model, "seed": 3, "cfg": 5.5, "recipe": AFS_RECIPE, "freeu": freeu, "positive": conds[0],
              "negative": conds[1], "latent_image": {"samples": torch.zeros(1, 4, 8, 8)}, "denoise": 1.0, "params": ""}
    with torch.no_grad():
        output, ui = executed(comfy, "FewStepKSampler", inputs)
    assert [len(o) for o in output] == [1, 1] and output[0][0]["samples"].shape == (1, 4, 8, 8)
    status, reply = routes.schedule_reply({"recipe": AFS_RECIPE, "denoise": "1.0", "params": ""})
    assert status == 200, reply
    if freeu == "off":
        reply["recipe_freeu"] = []
    assert_same_reply(ui[UI_KEY][0], reply)
    assert ui[UI_KEY][0]["afs_midpoint"]["sigma"] == ui[UI_KEY][0]["evaluations"][0]


# ---- the page, in every frontend and mode the ComfyUI under test can serve ------------------------

NEEDS_CURRENT = "needs CURRENT ComfyUI (COMFYUI_PATH)"
NEEDS_PINNED = "needs PINNED ComfyUI (COMFYUI_PATH unset): only PINNED serves the old LiteGraph page"
# The newest frontend, installed by scripts/install_env.sh next to the venv (it cannot share the venv's
# site-packages with CURRENT's own 1.27.10) and served by CURRENT with --front-end-root.
FRONTEND_1581 = Path(sys.prefix) / "frontend-1.58.1" / "comfyui_frontend_package" / "static"
SETTINGS = THUMBNAIL_SETTINGS  # the graph alone: no template browser, minimap or canvas menus over it
MARGIN = 20  # graph units between two nodes of a bundled workflow
CURVE, END = (0x66, 0xCC, 0xFF), (0xFF, 0xBB, 0x44)  # the colours of the drawn points (js/fewstep_sigmas.js)
INSERTED = (0xFF, 0x77, 0xCC)  # the AFS midpoint's diamond
TOLD = (0xFF, 0x99, 0x66)  # a learned model time's triangle: the sigma the network is told
LEARNED_PARAMS = ("fewstep v1: steps=5 base_steps=8 base_rho=6.7069 end_index=6 time_rho=1.2742 "
                  "ramp=0.106409,0.284938,0.54164,0.849098 solver=dpmpp_2m weights=0.5148,-0.1296:-0.2059,"
                  "0.06575:-0.2776:0.2323,0.08535:-0.1983:0.1437,-0.02027:-0.4523:0.3332 "
                  "model_time=-0.5,0,-0.1955,-0.1837,-0.3728")


@dataclass(frozen=True)
class Mode:
    name: str
    current: bool  # served by CURRENT (else PINNED)
    version: str | None  # the frontend's own version (window.__COMFYUI_FRONTEND_VERSION__); None: the old page
    root: Path | None = None  # --front-end-root
    vue: bool = False  # Nodes 2.0 (Comfy.VueNodes.Enabled)


MODES = [
    Mode("pinned-page", current=False, version=None),
    Mode("frontend-1.27.10", current=True, version="1.27.10"),
    Mode("frontend-1.58.1-classic", current=True, version="1.58.1", root=FRONTEND_1581),
    Mode("frontend-1.58.1-nodes2", current=True, version="1.58.1", root=FRONTEND_1581, vue=True),
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install_env.sh installs Debian's chromium "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server_1581(comfy, tmp_path_factory):
    """CURRENT serving frontend 1.58.1 (--front-end-root) with the pack installed."""
    if not (FRONTEND_1581 / "index.html").exists():
        pytest.fail(f"{FRONTEND_1581} is missing: scripts/install_env.sh installs comfyui-frontend-package==1.58.1 "
                    "there (pip install --no-deps --target <venv>/frontend-1.58.1)")
    with server_with_checkpoint(tmp_path_factory.mktemp("preview-server-1581"), "sd15",
                                ["--front-end-root", str(FRONTEND_1581)]) as running:
        yield running


@pytest.fixture(scope="module", params=MODES, ids=[m.name for m in MODES])
def mode(request, comfy):
    if request.param.current and not comfy.current:
        pytest.skip(NEEDS_CURRENT)
    if not request.param.current and comfy.current:
        pytest.skip(NEEDS_PINNED)
    return request.param


@pytest.fixture(scope="module")
def artifacts(mode):
    folder = REPO / "tests" / "artifacts" / "schedule_graph" / mode.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Screen rectangles of every node, in graph units, title bar included: the classic canvas draws a node
# at least as tall as its widgets need (computeSize); Nodes 2.0 nodes are DOM elements.
NODE_RECTS = """() => {
  const c = window.app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect();
  const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
  return window.app.graph._nodes.map((n) => {
    const el = LiteGraph.vueNodesMode ? document.querySelector(`[data-node-id="${n.id}"]`) : null;
    const name = n.title || n.type;
    if (el) {
      const b = el.getBoundingClientRect();
      return {name, x: (b.left - r.left) / ds.scale - ds.offset[0], y: (b.top - r.top) / ds.scale - ds.offset[1],
              w: b.width / ds.scale, h: b.height / ds.scale, dom: true};
    }
    const h = Math.max(n.size[1], n.computeSize?.()[1] ?? 0);
    return {name, x: n.pos[0], y: n.pos[1] - title, w: n.size[0], h: h + title, dom: false};
  });
}"""


class GraphPage:
    """The server's page with a bundled workflow loaded through it, and every console message."""

    def __init__(self, page, mode: Mode):
        self.page = page
        self.mode = mode
        self.node_type = "FewStepSigmas"  # the node node(), settled() and the screenshots are about
        self.messages = []  # (kind, text, where)
        self.expected_errors = set()
        page.on("console", lambda m: self.messages.append((m.type, m.text, m.location.get("url", ""))))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e), e.stack or "")))

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def node(self, script: str, arg=None):
        """Evaluate ``(node, arg) => ...`` on the workflow's Few-Step Sigmas node."""
        return self.js(f"([arg]) => ({script})(window.app.graph.findNodesByType('{self.node_type}', [])[0], arg)",
                       [arg])

    def load(self, workflow: dict) -> None:
        self.js("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
        self.page.wait_for_function("() => window.__fewstep.idle()", timeout=20000)

    def settled(self) -> dict:
        """The node's schedule once the graph shows its widgets' schedule."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.page.wait_for_function("() => window.__fewstep.idle()", timeout=20000)
        try:
            self.page.wait_for_function(
                "(type) => window.app.graph.findNodesByType(type, [])[0].fewstepSchedule.plotted.length > 0 "
                "|| window.app.graph.findNodesByType(type, [])[0].fewstepSchedule.error", arg=self.node_type,
                timeout=20000)
        except PlaywrightTimeout:
            state = self.node("n => ({schedule: !!n.fewstepSchedule, plotted: n.fewstepSchedule?.plotted?.length, "
                              "idle: window.__fewstep.idle(), vue: !!LiteGraph.vueNodesMode})")
            raise AssertionError(f"the schedule was fetched but never drawn in {self.mode.name}: {state}") from None
        return self.node("n => n.fewstepSchedule")

    def widgets(self) -> dict:
        return {w["name"]: w for w in self.node(
            "n => n.widgets.map(w => ({name: w.name, value: w.value, disabled: !!w.disabled, "
            "label: w.label ?? null}))")}

    def set_widget(self, name: str, value) -> None:
        """Set a widget and run its callback, as the frontend does when a user edits it."""
        self.node("""(n, [name, value]) => { const w = n.widgets.find(w => w.name === name);
                     w.value = value; w.callback?.(value, window.app.canvas, n); n.setDirtyCanvas(true, true); }""",
                  [name, value])

    def node_element(self):
        """Nodes 2.0: the Few-Step Sigmas node's DOM element."""
        node_id = self.node("n => n.id")
        return self.page.locator(f'[data-node-id="{node_id}"]').first

    def click(self, name: str, right: float, down: float = 10) -> None:
        """A real mouse click on a classic canvas widget, ``right`` px from the node's right edge."""
        x, y = self.node("""(n, [name, right, down]) => { const w = n.widgets.find(w => w.name === name);
            const rect = window.app.canvas.canvas.getBoundingClientRect();
            const [cx, cy] = window.app.canvas.ds.convertOffsetToCanvas(
                [n.pos[0] + n.size[0] - right, n.pos[1] + (w.last_y ?? w.y) + down]);
            return [rect.left + cx, rect.top + cy]; }""", [name, right, down])
        self.page.mouse.click(x, y)

    def next_choice(self, name: str, choice: str) -> None:
        """Pick the next choice of a combo widget with the mouse (its right arrow; Nodes 2.0: its list)."""
        if not self.mode.vue:
            self.click(name, 25)
            return
        self.node_element().locator(f'[data-widget-name="{name}"] [role="combobox"]').first.click()
        self.page.get_by_role("option", name=choice, exact=True).first.click()

    def step_up(self, name: str) -> None:
        """One step up on a number widget with the mouse (its right arrow; Nodes 2.0: its + button)."""
        if not self.mode.vue:
            self.click(name, 25)
            return
        self.node_element().locator(f'[data-widget-name="{name}"] [data-testid="increment"]').first.click()

    def click_plot(self) -> None:
        """A real mouse click in the middle of the schedule graph."""
        if self.mode.vue:
            self.node_element().locator('[data-widget-name="fewstep_schedule"] canvas').first.click()
        else:
            self.click("fewstep_schedule", 150, 90)

    def show_node(self) -> None:
        self.node("""n => { const c = window.app.canvas; c.ds.scale = 1.4;
            c.ds.offset = [-n.pos[0] + 260, -n.pos[1] + 90]; c.setDirty(true, true); }""")
        self.page.wait_for_timeout(700)

    def node_box(self) -> dict:
        """The node's rectangle on the page (CSS px), title included."""
        if self.mode.vue:
            return self.node_element().bounding_box()
        return self.node("""n => { const c = window.app.canvas; const r = c.canvas.getBoundingClientRect();
            const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
            const [x, y] = c.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - title]);
            return {x: r.left + x, y: r.top + y, width: n.size[0] * c.ds.scale,
                    height: (n.size[1] + title) * c.ds.scale}; }""")

    def plotted_on_page(self, key: str = "plotted") -> list:
        """Where the drawn points (``key``: "plotted", or "toldPlotted" for a learned model time's markers) are on
        the page (CSS px): node coordinates on the classic canvas, the widget canvas' own coordinates in Nodes 2.0."""
        if self.mode.vue:
            canvas = self.node_element().locator('[data-widget-name="fewstep_schedule"] canvas').first
            box = canvas.bounding_box()
            width = canvas.evaluate("c => c.offsetWidth")
            scale = box["width"] / width
            plotted = self.node(f"n => n.fewstepSchedule.{key}")
            return [(box["x"] + p["x"] * scale, box["y"] + p["y"] * scale) for p in plotted]
        return self.node("""n => { const c = window.app.canvas; const r = c.canvas.getBoundingClientRect();
            return n.fewstepSchedule.KEY.map(p => { const [x, y] = c.ds.convertOffsetToCanvas(
                [n.pos[0] + p.x, n.pos[1] + p.y]); return [r.left + x, r.top + y]; }); }""".replace("KEY", key))

    def screenshot(self, path: Path):
        """The node (and a margin) to ``path``, the whole page next to it; returns the page as an image."""
        from PIL import Image

        self.show_node()
        box = self.node_box()
        clip = {"x": max(box["x"] - 30, 0), "y": max(box["y"] - 30, 0), "width": box["width"] + 60,
                "height": box["height"] + 60}
        self.page.screenshot(path=str(path), clip=clip)
        whole = path.with_name(path.stem + "_page.png")
        self.page.screenshot(path=str(whole))
        return Image.open(whole).convert("RGB")

    def errors_from_extension(self) -> list:
        return [m for m in self.messages if m[0] in ("error", "pageerror") and m not in self.expected_errors
                and any(word in " ".join(m).lower() for word in ("fewstep", "few-step"))]


@pytest.fixture(scope="module")
def graph_page(mode, request, browser):
    server = request.getfixturevalue("server_1581" if mode.root else "server")
    if mode.current:  # the new frontends greet a new user with the template browser over the canvas
        for setting, value in {**SETTINGS, "Comfy.VueNodes.Enabled": mode.vue}.items():
            assert server.post_json(f"/settings/{setting}", value)[0] == 200
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    graph = GraphPage(page, mode)
    page.goto(server.url)
    page.wait_for_function(
        "() => window.app?.graph && window.__fewstep && LiteGraph.registered_node_types.FewStepSigmas", timeout=120000)
    assert graph.js("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null") == mode.version
    graph.load(json.loads(WORKFLOW.read_text()))
    assert graph.js("() => !!LiteGraph.vueNodesMode") == mode.vue
    graph.server = server
    yield graph
    page.close()


def colour_near(image, x: float, y: float, colour, radius: int = 1, tolerance: int = 40) -> bool:
    """Whether a pixel within ``radius`` of (x, y) has ``colour``."""
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            pixel = image.getpixel((round(x) + dx, round(y) + dy))
            if max(abs(a - b) for a, b in zip(pixel, colour)) <= tolerance:
                return True
    return False


def assert_drawn(graph_page, image, schedule) -> None:
    """The points the node says it drew are on the screen, in the curve's colours."""
    points = graph_page.plotted_on_page()
    assert len(points) == len(schedule["sigmas"]) > 1
    for x, y in points[:-1]:
        assert colour_near(image, x, y, CURVE), (x, y, image.getpixel((round(x), round(y))))
    assert colour_near(image, *points[-1], END), (points[-1], image.getpixel(tuple(map(round, points[-1]))))
    box = graph_page.node_box()
    assert all(box["x"] < x < box["x"] + box["width"] and box["y"] < y < box["y"] + box["height"] for x, y in points)


def test_bundled_workflow_draws_the_python_schedule(graph_page, artifacts):
    schedule = graph_page.settled()
    expected = python_schedule("SD1.5 5-step")
    assert schedule["recipe"] == "SD1.5 5-step" and schedule["nfe"] == 5 and schedule["solver"] == "dpmpp_1s"
    assert schedule["sigmas"] == expected
    assert schedule["sigmas"] == pytest.approx(SD15_5STEP, rel=2e-5)
    assert schedule["surface"] == ("widget" if graph_page.mode.vue else "node")
    plotted = schedule["plotted"]
    assert [p["step"] for p in plotted] == list(range(6))
    assert [p["sigma"] for p in plotted] == expected
    # drawn left to right, each lower than the last: a log scale in sigma
    xs, ys = [p["x"] for p in plotted], [p["y"] for p in plotted]
    assert all(b > a for a, b in zip(xs, xs[1:])) and all(b > a for a, b in zip(ys, ys[1:]))
    log_slope = [(ys[i + 1] - ys[i]) / (math.log(expected[i]) - math.log(expected[i + 1])) for i in range(5)]
    assert max(log_slope) == pytest.approx(min(log_slope), rel=1e-6)
    # the workflow's Timed FreeU (steps 1..-1) is shown on every step
    assert schedule["freeu"] == [{"first_step": 1, "last_step": -1, "start_percent": 0, "end_percent": 1,
                                  "steps": [1, 2, 3, 4, 5]}]
    # the named recipe's own values, disabled and marked as the recipe's
    widgets = graph_page.widgets()
    recipe = RECIPES["SD1.5 5-step"]
    for name in CUSTOM_WIDGETS:
        assert widgets[name]["value"] == getattr(recipe, name)
        assert widgets[name]["disabled"] and "(recipe)" in widgets[name]["label"]
    image = graph_page.screenshot(artifacts / "fewstep_sigmas_named_recipe.png")
    assert_drawn(graph_page, image, schedule)
    if graph_page.mode.vue:  # what the user reads: the marked labels and the recipe's values, disabled
        for name in CUSTOM_WIDGETS:
            row = graph_page.node_element().locator(f'[data-widget-name="{name}"]').first
            assert f"{name} (recipe)" in row.inner_text()
            field = row.locator("input").first
            assert field.is_disabled() and float(field.input_value()) == getattr(recipe, name)


def test_plot_follows_recipe_and_custom_changes(graph_page, artifacts):
    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.settled()
    graph_page.show_node()
    graph_page.next_choice("recipe", "SD1.5 6-step")  # with the mouse
    schedule = graph_page.settled()
    assert schedule["recipe"] == "SD1.5 6-step" and schedule["nfe"] == 6
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule("SD1.5 6-step")

    graph_page.set_widget("recipe", "SDXL 8-step")
    schedule = graph_page.settled()
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule("SDXL 8-step")
    assert schedule["solver"] == "dpmpp_2m" and schedule["freeu"][0]["steps"] == list(range(1, 9))
    widgets = graph_page.widgets()
    assert [widgets[name]["value"] for name in CUSTOM_WIDGETS] == [8, 12, 12.0, 10, 1.2]

    graph_page.set_widget("recipe", CUSTOM)  # editable, starting from the last recipe's values
    schedule = graph_page.settled()
    widgets = graph_page.widgets()
    assert not any(widgets[name]["disabled"] for name in CUSTOM_WIDGETS)
    assert not any("(recipe)" in (widgets[name]["label"] or "") for name in CUSTOM_WIDGETS)
    assert schedule["sigmas"] == python_schedule(CUSTOM, (8, 12, 12.0, 10, 1.2))

    graph_page.show_node()
    graph_page.step_up("steps")  # 8 -> 9 with the mouse
    schedule = graph_page.settled()
    assert graph_page.widgets()["steps"]["value"] == 9
    assert schedule["nfe"] == 9 and len(schedule["plotted"]) == 10
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule(CUSTOM, (9, 12, 12.0, 10, 1.2))

    graph_page.set_widget("time_rho", 2.0)
    graph_page.set_widget("denoise", 0.6)
    schedule = graph_page.settled()
    assert schedule["params"] == {"steps": 9, "base_steps": 12, "base_rho": 12, "end_index": 10, "time_rho": 2,
                                  "denoise": 0.6}
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule(CUSTOM, (9, 12, 12.0, 10, 2.0), 0.6)
    image = graph_page.screenshot(artifacts / "fewstep_sigmas_custom.png")
    assert_drawn(graph_page, image, schedule)


def band_green(image, points, step: int) -> float:
    """How green (green less red, the median over the plot's height) the column half way between points
    step-1 and step is: the FreeU band is green; the curve and the grid lines cross few of its pixels."""
    x = round((points[step - 1][0] + points[step][0]) / 2)
    top, bottom = round(min(y for _, y in points)), round(max(y for _, y in points))
    column = sorted(green - red for red, green, _ in (image.getpixel((x, y)) for y in range(top, bottom)))
    return column[len(column) // 2]


def test_timed_freeu_percent_window_is_shaded_where_it_acts(graph_page, artifacts):
    """Editing the Timed FreeU node's percents re-draws the FreeU band on the steps it covers."""
    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.set_widget("denoise", 1.0)
    set_freeu = """([name, value]) => { const n = window.app.graph.findNodesByType('TimedFreeU', [])[0];
        const w = n.widgets.find(w => w.name === name); w.value = value; w.callback?.(value, window.app.canvas, n);
        window.app.graph.setDirtyCanvas(true, true); }"""
    graph_page.js(set_freeu, ["start_percent", 0.35])
    graph_page.js(set_freeu, ["end_percent", 0.6])
    schedule = graph_page.settled()
    # the old LiteGraph rounds to its step in binary (0.35000000000000003); what the node gets is shown
    assert schedule["freeu"] == [{"first_step": 1, "last_step": -1, "start_percent": pytest.approx(0.35, abs=1e-9),
                                  "end_percent": pytest.approx(0.6, abs=1e-9), "steps": [3]}]
    # step 3 is where Timed FreeU acts with this window (test_comfy_nodes checks that on the real node)
    image = graph_page.screenshot(artifacts / "fewstep_sigmas_freeu_percent.png")
    assert_drawn(graph_page, image, schedule)
    points = graph_page.plotted_on_page()
    shaded, plain = band_green(image, points, 3), [band_green(image, points, s) for s in (1, 2, 4, 5)]
    assert shaded > max(plain) + 10, (shaded, plain)
    # a FreeU change made anywhere in the graph reaches the plot without touching Few-Step Sigmas
    graph_page.js("""() => { const n = window.app.graph.findNodesByType('TimedFreeU', [])[0];
        n.widgets.find(w => w.name === 'start_percent').value = 0.0;
        n.widgets.find(w => w.name === 'end_percent').value = 1.0; }""")
    schedule = graph_page.settled()
    assert schedule["freeu"][0]["steps"] == [1, 2, 3, 4, 5]
    image = graph_page.screenshot(artifacts / "fewstep_sigmas_freeu_all_steps.png")
    points = graph_page.plotted_on_page()
    assert min(band_green(image, points, s) for s in range(1, 6)) > max(plain) + 10


def test_timed_freeu_window_that_selects_no_step_is_named_on_the_graph(graph_page, artifacts):
    """A step window valid in itself (mixed signs) can select no step of a short schedule: the graph says so
    (the route's ``warning``) and shades nothing, rather than drawing it as if FreeU were on."""
    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.set_widget("denoise", 1.0)
    set_steps = """([first, last]) => { const n = window.app.graph.findNodesByType('TimedFreeU', [])[0];
        for (const [name, value] of [['first_step', first], ['last_step', last]]) {
            const w = n.widgets.find(w => w.name === name); w.value = value;
            w.callback?.(value, window.app.canvas, n); }
        window.app.graph.setDirtyCanvas(true, true); }"""
    try:
        graph_page.js(set_steps, [5, -3])  # steps 5..3 of 5: nothing
        schedule = graph_page.settled()
        assert schedule["freeu"][0]["steps"] == []
        assert "select no step of this 5-step schedule" in schedule["freeu"][0]["warning"]
        image = graph_page.screenshot(artifacts / "fewstep_sigmas_freeu_no_step.png")
        assert graph_page.node("(n) => n.fewstepSchedule.notes") == ["Timed FreeU 5..-3: no step of 5"]
        points = graph_page.plotted_on_page()
        empty = [band_green(image, points, s) for s in range(1, 6)]
        graph_page.js(set_steps, [2, -2])  # steps 2..4: shaded, no note
        schedule = graph_page.settled()
        assert schedule["freeu"][0]["steps"] == [2, 3, 4] and "warning" not in schedule["freeu"][0]
        image = graph_page.screenshot(artifacts / "fewstep_sigmas_freeu_steps_2_to_4.png")
        assert graph_page.node("(n) => n.fewstepSchedule.notes") == []
        points = graph_page.plotted_on_page()
        assert min(band_green(image, points, s) for s in (2, 3, 4)) > max(empty) + 10
    finally:
        graph_page.js(set_steps, [1, -1])
        graph_page.settled()


AFS_RECIPE = "SDXL 6-step UniPC"
SET_FREEU_STEPS = """([first, last]) => { const n = window.app.graph.findNodesByType('TimedFreeU', [])[0];
    for (const [name, value] of [['first_step', first], ['last_step', last]]) {
        const w = n.widgets.find(w => w.name === name); w.value = value; w.callback?.(value, window.app.canvas, n); }
    window.app.graph.setDirtyCanvas(true, true); }"""


def assert_hollow(image, x: float, y: float, radius: float) -> None:
    """sigma_0 with AFS: a ring in the curve's colour around a centre that is not (the curve is covered)."""
    assert not colour_near(image, x, y, CURVE), ("filled", x, y, image.getpixel((round(x), round(y))))
    assert colour_near(image, x, y - radius, CURVE) and colour_near(image, x - radius, y, CURVE), (x, y, radius)


def test_unipc_afs_recipe_draws_the_midpoint_and_the_analytic_first_sigma(graph_page, artifacts):
    """SDXL 6-step UniPC (analytical first step): the graph draws sigma_0 (hollow: no model evaluation), the
    inserted midpoint (tests/afs_reference.py, from RECIPES.md) and sigma_1..sigma_N, says 6 evaluations,
    and shades the recipe's Timed FreeU steps (the last 3 evaluations) where those evaluations are; step 1
    of a window is the evaluation at the midpoint, so its band starts there, not at sigma_0."""
    recipe = RECIPES[AFS_RECIPE]
    (freeu,) = recipe.freeu
    graph_page.set_widget("denoise", 1.0)
    graph_page.set_widget("recipe", AFS_RECIPE)
    try:
        graph_page.js(SET_FREEU_STEPS, [freeu.first_step, freeu.last_step])
        schedule = graph_page.settled()
        sigmas = python_schedule(AFS_RECIPE)
        sigma, timestep = midpoint(sigmas[0], sigmas[1], standard_sigma_table().tolist())
        assert schedule["nfe"] == recipe.steps == 6 and schedule["solver"] == "unipc_afs"
        assert schedule["unipc"] == {"solver": "unipc_afs", "order": 1, "variant": "bh1", "afs": True}
        plotted = schedule["plotted"]
        assert [p["step"] for p in plotted] == [0, 0.5, 1, 2, 3, 4, 5, 6]
        assert [p["sigma"] for p in plotted] == pytest.approx([sigmas[0], sigma, *sigmas[1:]], rel=1e-6)
        assert [p["sigma"] for i, p in enumerate(plotted) if i != 1] == sigmas
        assert [p["kind"] for p in plotted] == ["analytic", "inserted", *["evaluated"] * 5, "end"]
        assert [p["evaluation"] for p in plotted] == [None, 1, 2, 3, 4, 5, 6, None]
        assert schedule["freeu"][0]["steps"] == [4, 5, 6]
        assert any("analytic, no model evaluation" in line for line in schedule["legend"])
        xs, ys = [p["x"] for p in plotted], [p["y"] for p in plotted]
        assert all(b > a for a, b in zip(xs, xs[1:])) and all(b > a for a, b in zip(ys, ys[1:]))

        image = graph_page.screenshot(artifacts / "fewstep_sigmas_unipc_afs.png")
        points = graph_page.plotted_on_page()
        assert len(points) == len(plotted) == recipe.steps + 2
        scale = (points[-1][0] - points[0][0]) / (xs[-1] - xs[0])  # page pixels per drawing unit
        assert_hollow(image, *points[0], 4.5 * scale)
        assert colour_near(image, *points[1], INSERTED), (points[1], image.getpixel(tuple(map(round, points[1]))))
        for x, y in points[2:-1]:
            assert colour_near(image, x, y, CURVE), (x, y, image.getpixel((round(x), round(y))))
        assert colour_near(image, *points[-1], END)
        box = graph_page.node_box()
        assert all(box["x"] < x < box["x"] + box["width"] and box["y"] < y < box["y"] + box["height"]
                   for x, y in points)
        evaluated = points[1:]  # evaluation k's band: from its point (k = 1: the midpoint) to the next point
        shaded, plain = [band_green(image, evaluated, k) for k in (4, 5, 6)], [band_green(image, evaluated, k)
                                                                               for k in (1, 2, 3)]
        assert min(shaded) > max(plain) + 10, (shaded, plain)

        graph_page.js(SET_FREEU_STEPS, [1, 1])  # step 1 only: from the midpoint to sigma_1
        schedule = graph_page.settled()
        assert schedule["freeu"][0]["steps"] == [1]
        image = graph_page.screenshot(artifacts / "fewstep_sigmas_unipc_afs_step_1.png")
        points = graph_page.plotted_on_page()
        analytic, step_1 = band_green(image, points, 1), band_green(image, points[1:], 1)
        assert step_1 > analytic + 10 and step_1 > band_green(image, points[1:], 2) + 10, (analytic, step_1)
    finally:
        graph_page.js(SET_FREEU_STEPS, [1, -1])
        graph_page.set_widget("recipe", "SD1.5 5-step")
        graph_page.settled()


def test_unipc_recipe_without_afs_draws_every_evaluation_as_before(graph_page):
    graph_page.set_widget("denoise", 1.0)
    graph_page.set_widget("recipe", "SD1.5 6-step UniPC")
    schedule = graph_page.settled()
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule("SD1.5 6-step UniPC")
    assert [p["kind"] for p in schedule["plotted"]] == ["evaluated"] * 6 + ["end"]
    assert schedule["unipc"]["afs"] is False and "afs_midpoint" not in schedule and schedule["legend"] == []
    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.settled()


def test_invalid_custom_values_show_the_message(graph_page):
    graph_page.set_widget("recipe", CUSTOM)
    graph_page.set_widget("steps", 9)
    graph_page.set_widget("base_steps", 8)
    graph_page.set_widget("end_index", 8)
    schedule = graph_page.settled()
    assert "end_index = 8 is out of range: allowed 1 to 7" in schedule["error"]
    assert schedule["plotted"] == []
    # the browser logs the 400 reply itself; that is the one error expected here
    graph_page.expected_errors.update(m for m in graph_page.messages if m[0] == "error" and "400" in m[1])
    graph_page.set_widget("end_index", 6)
    schedule = graph_page.settled()
    assert "error" not in schedule and len(schedule["plotted"]) == 10


def test_saved_workflow_and_prompt_hold_only_the_node_inputs(graph_page):
    graph_page.set_widget("recipe", "SD1.5 8-step")
    graph_page.set_widget("denoise", 0.6)
    graph_page.settled()
    saved = graph_page.js("() => window.app.graph.serialize()")
    node = next(n for n in saved["nodes"] if n["type"] == "FewStepSigmas")
    recipe = RECIPES["SD1.5 8-step"]
    assert node["widgets_values"] == ["SD1.5 8-step", 0.6, recipe.steps, recipe.base_steps, recipe.base_rho,
                                      recipe.end_index, recipe.time_rho, ""]  # "": the tuner's params, unused
    assert "(recipe)" not in json.dumps(saved)
    prompt = graph_page.js("async () => (await window.app.graphToPrompt()).output")
    inputs = prompt[str(node["id"])]["inputs"]
    assert set(inputs) == {"model", "recipe", "denoise", *CUSTOM_WIDGETS, "params"}
    assert to_api(saved, graph_page.server.object_info())[str(node["id"])]["inputs"] == inputs


def test_a_flow_shift_node_up_the_model_input_puts_the_graph_on_the_flow_axis(graph_page):
    """ModelSamplingSD3 between the checkpoint and Few-Step Sigmas: the graph asks for and draws the schedule on
    SD3's flow axis with that node's shift (what Few-Step Sigmas gives on such a model); a new shift follows; the
    node bypassed, the SD axis again."""
    if not graph_page.mode.current:
        pytest.skip("PINNED (March 2024) has no ModelSamplingSD3")
    from fewstep.schedule import flow_sigma_table

    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.set_widget("denoise", 1.0)  # an earlier test may have left another
    graph_page.settled()
    graph_page.node("""n => { const slot = n.inputs.findIndex(i => i.type === "MODEL");
        const link = n.graph.links[n.inputs[slot].link]; const origin = n.graph.getNodeById(link.origin_id);
        const shift = LiteGraph.createNode("ModelSamplingSD3"); shift.pos = [n.pos[0], n.pos[1] - 140];
        n.graph.add(shift); origin.connect(link.origin_slot, shift, 0); shift.connect(0, n, slot);
        window.__fewstepShiftNode = shift; }""")
    try:
        for shift in (3.0, 6.0):
            graph_page.js("(v) => { const w = window.__fewstepShiftNode.widgets.find(w => w.name === 'shift'); "
                          "w.value = v; w.callback?.(v); }", shift)
            graph_page.page.wait_for_function(
                "(v) => window.app.graph.findNodesByType('FewStepSigmas', [])[0].fewstepSchedule?.axis?.shift === v",
                arg=shift, timeout=20000)
            schedule = graph_page.settled()
            expected = recipe_sigmas(RECIPES["SD1.5 5-step"], flow_sigma_table(shift)).tolist()
            assert schedule["axis"] == {"kind": "flow", "shift": shift} and schedule["sigmas"] == expected
            assert schedule["sigmas"][0] == 1.0 and [p["sigma"] for p in schedule["plotted"]] == expected
            assert all(w["steps"] == [] for w in schedule["freeu"])  # the workflow's Timed FreeU: off on a DiT
        graph_page.js("() => { window.__fewstepShiftNode.mode = 4; }")  # bypassed: the model passes unchanged
        graph_page.page.wait_for_function(
            "() => window.app.graph.findNodesByType('FewStepSigmas', [])[0].fewstepSchedule?.axis?.kind === 'sd'",
            timeout=20000)
        assert graph_page.settled()["sigmas"] == python_schedule("SD1.5 5-step")
        assert graph_page.errors_from_extension() == []
    finally:
        graph_page.load(json.loads(WORKFLOW.read_text()))


def test_no_console_errors_from_the_extension(graph_page):
    before = graph_page.settled()
    graph_page.show_node()
    graph_page.click_plot()  # a click on the graph itself changes nothing
    graph_page.page.wait_for_timeout(300)
    assert graph_page.settled()["sigmas"] == before["sigmas"]
    names = graph_page.js("() => window.app.extensions.map(e => e.name)")
    assert "ComfyUI-FewStep.FewStepSigmas" in names  # registered through app.registerExtension
    assert graph_page.errors_from_extension() == []


def test_switching_nodes_2_0_on_and_off_keeps_the_graph(graph_page, request):
    """A user may switch Nodes 2.0 on or off with the workflow open (a setting, no reload)."""
    if graph_page.mode.version != "1.58.1":
        pytest.skip("Nodes 2.0 is tested on frontend 1.58.1 (1.27.10 has only an early experiment of it)")
    graph_page.set_widget("recipe", "SD1.5 6-step")
    graph_page.set_widget("denoise", 1.0)
    expected = python_schedule("SD1.5 6-step")
    graph_page.settled()
    switch = "async (on) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }"
    request.addfinalizer(lambda: graph_page.js(switch, graph_page.mode.vue))  # back to the mode the page is for
    for vue in (not graph_page.mode.vue, graph_page.mode.vue):
        graph_page.js(switch, vue)
        graph_page.page.wait_for_function(
            "(surface) => { const s = window.app.graph.findNodesByType('FewStepSigmas', [])[0].fewstepSchedule; "
            "return s.surface === surface && s.plotted.length > 0; }", arg="widget" if vue else "node", timeout=20000)
        schedule = graph_page.settled()
        assert [p["sigma"] for p in schedule["plotted"]] == expected
        # the classic canvas hides a disabled widget's value, so the label carries it; Nodes 2.0 shows it
        label = "steps (recipe)" if vue else "steps = 6 (recipe)"
        graph_page.page.wait_for_function(
            "(label) => window.app.graph.findNodesByType('FewStepSigmas', [])[0].widgets"
            ".find(w => w.name === 'steps').label === label", arg=label, timeout=5000)


KSAMPLER_WORKFLOW = REPO / "workflows" / "fewstep_sd15_5step_ksampler.json"


@pytest.fixture
def ksampler_page(graph_page):
    """The page with the bundled Few-Step KSampler workflow loaded, node() on its Few-Step KSampler; the
    Few-Step Sigmas workflow back afterwards."""
    graph_page.load(json.loads(KSAMPLER_WORKFLOW.read_text()))
    graph_page.node_type = "FewStepKSampler"
    try:
        yield graph_page
    finally:
        graph_page.node_type = "FewStepSigmas"
        graph_page.load(json.loads(WORKFLOW.read_text()))


def bands(image, points, steps) -> list[float]:
    return [band_green(image, points, k) for k in steps]


def test_few_step_ksampler_draws_its_schedule_and_its_recipe_freeu(ksampler_page, artifacts):
    """The graph on Few-Step KSampler: the Python schedule of its recipe, the recipe's own FreeU steps shaded
    with freeu = recipe (measured in pixels), no band with freeu = off, and never a Timed FreeU node of the graph
    (it does not patch the KSampler's model)."""
    page = ksampler_page
    schedule = page.settled()
    expected = python_schedule("SD1.5 5-step")
    assert schedule["recipe"] == "SD1.5 5-step" and schedule["nfe"] == 5 and schedule["solver"] == "dpmpp_1s"
    assert [p["sigma"] for p in schedule["plotted"]] == expected == schedule["sigmas"]
    assert schedule["surface"] == ("widget" if page.mode.vue else "node")
    assert [w["steps"] for w in schedule["freeu"]] == [[1, 2, 3, 4, 5]]  # the recipe's FreeU: every step
    assert (schedule["freeu"][0]["b1"], schedule["freeu"][0]["b2"]) == (1.1, 1.1)
    # what it asked: its recipe, denoise and params, no Timed FreeU window; its freeu widget picks the band
    assert page.node("n => [...new URLSearchParams(n.fewstepSchedule.query).keys()]") == [
        "recipe", "denoise", "params", "FewStepKSampler.freeu"]
    image = page.screenshot(artifacts / "fewstep_ksampler_sd15_5step.png")
    assert_drawn(page, image, schedule)
    shaded_all = bands(image, page.plotted_on_page(), range(1, 6))
    if page.mode.vue:  # the node's height in Nodes 2.0 fits the room the bundled workflows give it
        from workflow_graph import SIZES, TITLE

        box = page.node_element().bounding_box()
        scale = page.js("() => window.app.canvas.ds.scale")
        print(f"Few-Step KSampler in Nodes 2.0: {box['height'] / scale:.0f} units high (title bar included)")
        assert box["height"] / scale <= SIZES["FewStepKSampler"][2] + TITLE

    page.set_widget("recipe", AFS_RECIPE)  # SDXL 6-step UniPC: FreeU on the last 3 evaluations, step 1 at the midpoint
    schedule = page.settled()
    sigmas = python_schedule(AFS_RECIPE)
    sigma, _ = midpoint(sigmas[0], sigmas[1], standard_sigma_table().tolist())
    plotted = schedule["plotted"]
    assert [p["sigma"] for p in plotted] == pytest.approx([sigmas[0], sigma, *sigmas[1:]], rel=1e-6)
    assert [p["kind"] for p in plotted] == ["analytic", "inserted", *["evaluated"] * 5, "end"]
    assert [w["steps"] for w in schedule["freeu"]] == [[4, 5, 6]]
    image = page.screenshot(artifacts / "fewstep_ksampler_sdxl_6step_unipc.png")
    evaluated = page.plotted_on_page()[1:]  # evaluation k's band: from its point to the next
    shaded, plain = bands(image, evaluated, (4, 5, 6)), bands(image, evaluated, (1, 2, 3))
    assert min(shaded) > max(plain) + 10, (shaded, plain)

    # a Timed FreeU node in the graph (steps 1..1) patches other samplers' models, not this one: not shaded
    page.js("""() => { const n = LiteGraph.createNode('TimedFreeU'); n.pos = [40, 900]; window.app.graph.add(n);
        for (const [name, value] of [['first_step', 1], ['last_step', 1]])
            n.widgets.find(w => w.name === name).value = value;
        window.app.graph.setDirtyCanvas(true, true); }""")
    page.page.wait_for_timeout(600)  # the periodic check (250 ms) would see it
    assert [w["steps"] for w in page.settled()["freeu"]] == [[4, 5, 6]]
    page.js("() => { for (const n of window.app.graph.findNodesByType('TimedFreeU', [])) window.app.graph.remove(n); }")

    page.set_widget("freeu", "off")
    schedule = page.settled()
    assert schedule["freeu"] == [] and schedule["recipe_freeu"][0]["steps"] == [4, 5, 6]
    assert [p["sigma"] for p in schedule["plotted"]] == pytest.approx([sigmas[0], sigma, *sigmas[1:]], rel=1e-6)
    image = page.screenshot(artifacts / "fewstep_ksampler_sdxl_6step_unipc_freeu_off.png")
    off = bands(image, page.plotted_on_page()[1:], range(1, 7))
    assert max(off) < min(shaded) - 10, (off, shaded)
    assert max(off) <= max(plain) + 5, (off, plain)  # the band is gone, not moved

    page.set_widget("recipe", "SD1.5 5-step")
    schedule = page.settled()
    image = page.screenshot(artifacts / "fewstep_ksampler_sd15_5step_freeu_off.png")
    assert schedule["freeu"] == [] and max(bands(image, page.plotted_on_page(), range(1, 6))) < min(shaded_all) - 10
    page.set_widget("freeu", "recipe")


def test_few_step_ksampler_custom_draws_the_params_schedule(ksampler_page, artifacts):
    page = ksampler_page
    page.set_widget("recipe", CUSTOM)
    schedule = page.settled()  # custom without params: the node's message, nothing drawn
    assert "recipe = 'custom' without params" in schedule["error"] and schedule["plotted"] == []
    page.expected_errors.update(m for m in page.messages if m[0] == "error" and "400" in m[1])
    page.set_widget("params", "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 "
                              "solver=dpmpp_2m")
    schedule = page.settled()
    assert "error" not in schedule and schedule["solver"] == "dpmpp_2m" and schedule["nfe"] == 7
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2))
    assert schedule["freeu"] == []  # custom: the KSampler applies no FreeU
    image = page.screenshot(artifacts / "fewstep_ksampler_custom_params.png")
    assert_drawn(page, image, schedule)
    # end=0: the same evaluated sigmas, the end point on the bottom edge of the log scale (sigma 0)
    page.set_widget("params", "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 "
                              "solver=dpmpp_2m end=0")
    zero = page.settled()
    assert "error" not in zero and zero["end"] == "0" and zero["nfe"] == 7
    assert [p["sigma"] for p in zero["plotted"]] == [*python_schedule(CUSTOM, (7, 12, 12.0, 10, 1.2))[:-1], 0.0]
    ys = [p["y"] for p in zero["plotted"]]
    assert all(math.isfinite(y) for y in ys) and all(b > a for a, b in zip(ys, ys[1:]))
    image = page.screenshot(artifacts / "fewstep_ksampler_custom_params_end_zero.png")
    assert_drawn(page, image, zero)
    # a DPM++ text with afs=1: sigma_0 hollow (estimated, not evaluated), the inserted midpoint, as for unipc_afs
    page.set_widget("params", "fewstep v1: steps=7 base_steps=12 base_rho=12.0 end_index=10 time_rho=1.2 "
                              "solver=dpmpp_2m afs=1")
    afs = page.settled()
    assert "error" not in afs and afs["nfe"] == 7 and "unipc" not in afs
    assert [p["kind"] for p in afs["plotted"]] == ["analytic", "inserted", *["evaluated"] * 6, "end"]
    assert [p["evaluation"] for p in afs["plotted"]] == [None, *range(1, 8), None]
    assert any("analytic, no model evaluation" in line for line in afs["legend"])
    image = page.screenshot(artifacts / "fewstep_ksampler_custom_params_dpmpp_afs.png")
    points, xs = page.plotted_on_page(), [p["x"] for p in afs["plotted"]]
    assert len(points) == len(afs["sigmas"]) + 1
    assert_hollow(image, *points[0], 4.5 * (points[-1][0] - points[0][0]) / (xs[-1] - xs[0]))
    assert colour_near(image, *points[1], INSERTED), (points[1], image.getpixel(tuple(map(round, points[1]))))
    assert all(colour_near(image, x, y, CURVE) for x, y in points[2:-1]) and colour_near(image, *points[-1], END)
    # learned numbers: a triangle in TOLD's colour at the sigma each moved evaluation's network is told, a legend line
    page.set_widget("params", LEARNED_PARAMS)
    learned = page.settled()
    assert "error" not in learned and learned["learned"] == ["weights", "model time"]
    told = learned["toldPlotted"]
    assert [t["evaluation"] for t in told] == [1, 3, 4, 5]
    by_evaluation = {p["evaluation"]: p for p in learned["plotted"]}
    for t in told:  # every delta here is negative: told below the evaluation's own sigma, drawn lower
        assert t["x"] == by_evaluation[t["evaluation"]]["x"] and t["y"] > by_evaluation[t["evaluation"]]["y"]
    assert learned["legend"] == ["\u03c3 the network is told (4 of 5)"]
    image = page.screenshot(artifacts / "fewstep_ksampler_learned_model_time.png")
    assert_drawn(page, image, learned)
    points, plotted = page.plotted_on_page("toldPlotted"), page.plotted_on_page()
    scale = (plotted[-1][0] - plotted[0][0]) / (learned["plotted"][-1]["x"] - learned["plotted"][0]["x"])
    for x, y in points:  # the triangle's top edge (it is hollow)
        assert colour_near(image, x, y - 3.2 * scale, TOLD, radius=2), (x, y, image.getpixel((round(x), round(y))))
    assert page.errors_from_extension() == []


QUEUE_FROM_PAGE = """async (prompt) => { const { api } = await import("/scripts/api.js");
    const response = await api.fetchApi("/prompt", { method: "POST", headers: { "Content-Type": "application/json" },
                                                      body: JSON.stringify({ prompt, client_id: api.clientId }) });
    return (await response.json()).prompt_id; }"""


def run_from_page(page, prompt: dict, node_id: str) -> dict:
    """Queue ``prompt`` with the page's client id, wait for its history entry, and return the schedule in Few-Step
    Sigmas' ui once the page draws it (``sampled``)."""
    start = time.perf_counter()
    entry = page.server.wait(page.js(QUEUE_FROM_PAGE, prompt), timeout=180)
    print(f"{page.mode.name}: the prompt ran in {time.perf_counter() - start:.1f} s")
    (payload,) = entry["outputs"][node_id]["fewstep_schedule"]  # the node's ui, in the history too
    page.page.wait_for_function("(first) => { const s = window.app.graph.findNodesByType('FewStepSigmas', [])[0]"
                                ".fewstepSchedule; return s?.sampled === true && s.sigmas[0] === first; }",
                                arg=payload["sigmas"][0], timeout=20000)
    return payload


def test_after_a_run_the_graph_draws_the_schedule_as_sampled(graph_page, artifacts):
    """A real run, queued with the page's client id (ComfyUI's "executed" message reaches the page): Few-Step Sigmas
    fed by a ModelSamplingContinuousEDM node that the page's graph does not show (as a plain loader of an EDM
    checkpoint: the preview stays on the SD axis) draws the schedule it sampled, on the EDM axis, labelled so, with
    the graph's Timed FreeU band; with ModelSamplingSD3 instead (CURRENT), on the flow axis with its shift and no
    FreeU band; a widget change brings the route's preview back, for good."""
    page = graph_page
    page.load(json.loads(WORKFLOW.read_text()))
    preview = page.settled()
    assert "sampled" not in preview and preview["sigmas"] == python_schedule("SD1.5 5-step")
    prompt = page.js("async () => (await window.app.graphToPrompt()).output")  # what Queue would send
    sigma_max = 120.0 + MODES.index(page.mode)  # a prompt of its own: ComfyUI serves an identical one from its cache
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = page.server.checkpoint_name
        elif node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = 64
        elif "noise_seed" in inputs:
            inputs["noise_seed"] = 9100 + MODES.index(page.mode)
    (node_id,) = [key for key, node in prompt.items() if node["class_type"] == "FewStepSigmas"]
    assert str(page.node("n => n.id")) == node_id  # the page's node: the message names it
    prompt["900"] = {"class_type": "ModelSamplingContinuousEDM", "inputs": {
        "model": prompt[node_id]["inputs"]["model"], "sampling": "edm_playground_v2.5", "sigma_max": sigma_max,
        "sigma_min": 0.002}}
    loader = prompt[node_id]["inputs"]["model"][0]
    prompt[node_id]["inputs"]["model"] = ["900", 0]
    if page.mode.current:  # only the schedule's branch, into a PreviewAny (PINNED has no output node for SIGMAS)
        prompt = {key: prompt[key] for key in (loader, "900", node_id)}
        prompt["901"] = {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}}
    payload = run_from_page(page, prompt, node_id)
    schedule = page.settled()
    t = (fewstep_timesteps(5, 8, 5.0, 6, 1.2) + 1.0) / 1000.0  # the recipe's timesteps on the EDM axis
    expected = torch.exp(math.log(0.002) + t * math.log(sigma_max / 0.002))
    assert schedule["axis"] == {"kind": "continuous", "sigma_min": 0.002, "sigma_max": sigma_max}
    assert [p["sigma"] for p in schedule["plotted"]] == payload["sigmas"] == schedule["sigmas"]
    torch.testing.assert_close(torch.tensor(payload["sigmas"], dtype=torch.float64), expected, rtol=5e-5, atol=0)
    assert schedule["caption"] == schedule["label"] == f"as sampled: continuous, \u03c3 0.002 to {sigma_max:g}"
    assert [w["steps"] for w in schedule["freeu"]] == [[1, 2, 3, 4, 5]]  # the workflow's Timed FreeU: every step
    image = page.screenshot(artifacts / "fewstep_sigmas_as_sampled_edm.png")
    assert_drawn(page, image, schedule)

    if page.mode.current:  # a flow model (SD3's sampling on the same UNet): the next run's schedule replaces it
        from fewstep.schedule import flow_sigma_table

        shift = 2.0 + MODES.index(page.mode)
        prompt["900"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [loader, 0], "shift": shift}}
        payload = run_from_page(page, prompt, node_id)
        schedule = page.settled()
        expected = recipe_sigmas(RECIPES["SD1.5 5-step"], flow_sigma_table(shift)).tolist()
        assert schedule["axis"] == {"kind": "flow", "shift": shift}
        assert [p["sigma"] for p in schedule["plotted"]] == payload["sigmas"] == pytest.approx(expected, rel=1e-6)
        assert schedule["caption"] == f"as sampled: flow, shift {shift:g}"
        assert [w["steps"] for w in schedule["freeu"]] == [[]]  # FreeU passes a flow model (a DiT) through
        assert schedule["notes"] == ["Timed FreeU 1..-1: off on a flow model"]
        image = page.screenshot(artifacts / "fewstep_sigmas_as_sampled_flow.png")
        assert_drawn(page, image, schedule)

    page.set_widget("denoise", 0.9)  # an input of the run changed: the preview again, on the SD axis
    schedule = page.settled()
    assert "sampled" not in schedule and schedule["caption"] is None
    assert [p["sigma"] for p in schedule["plotted"]] == python_schedule("SD1.5 5-step", denoise=0.9)
    page.set_widget("denoise", 1.0)  # and for good: the run's values again do not bring the run back
    schedule = page.settled()
    assert "sampled" not in schedule and schedule["sigmas"] == python_schedule("SD1.5 5-step")
    image = page.screenshot(artifacts / "fewstep_sigmas_preview_after_a_run.png")
    assert_drawn(page, image, schedule)
    assert page.errors_from_extension() == []


def test_few_step_ksampler_draws_its_ui_after_a_run(ksampler_page, artifacts):
    """Few-Step KSampler's executed message (its ui: here the route's reply on SD3's flow axis, as the node gives it
    on SD3): the AFS schedule it sampled, its own FreeU off on the DiT, the label; its model connected again, or its
    freeu widget changed, the preview again."""
    page = ksampler_page
    page.set_widget("recipe", AFS_RECIPE)
    preview = page.settled()
    status, payload = get(page.server, f"{ROUTE}?{ksampler_query(AFS_RECIPE)}&flow_shift=3")
    assert status == 200 and payload["sigmas"] != preview["sigmas"]
    page.node("(n, payload) => n.onExecuted({fewstep_schedule: [payload]})", payload)
    schedule = page.settled()
    sigmas = payload["sigmas"]
    assert schedule["sampled"] is True and schedule["caption"] == "as sampled: flow, shift 3"
    assert [p["sigma"] for p in schedule["plotted"]] == [sigmas[0], payload["afs_midpoint"]["sigma"], *sigmas[1:]]
    assert [p["kind"] for p in schedule["plotted"]] == ["analytic", "inserted", *["evaluated"] * 5, "end"]
    assert schedule["freeu"] == payload["recipe_freeu"]  # the FreeU it applies itself: off on a DiT
    assert schedule["notes"] == ["Timed FreeU -3..-1: off on a flow model"]
    image = page.screenshot(artifacts / "fewstep_ksampler_as_sampled_flow.png")
    points = page.plotted_on_page()
    assert colour_near(image, *points[1], INSERTED) and colour_near(image, *points[-1], END)
    page.node("""n => { const slot = n.inputs.findIndex(i => i.type === "MODEL");  // the model connected again
        const link = n.graph.links[n.inputs[slot].link] ?? n.graph.links.get?.(n.inputs[slot].link);
        n.graph.getNodeById(link.origin_id).connect(link.origin_slot, n, slot); }""")
    schedule = page.settled()
    assert "sampled" not in schedule and schedule["sigmas"] == preview["sigmas"]
    page.node("(n, payload) => n.onExecuted({fewstep_schedule: [payload]})", payload)
    assert page.settled()["sampled"] is True
    page.set_widget("freeu", "off")  # a widget of the run: the preview again
    schedule = page.settled()
    assert "sampled" not in schedule and schedule["sigmas"] == preview["sigmas"]
    page.set_widget("freeu", "recipe")
    assert page.errors_from_extension() == []


def settled_rects(graph_page, reads: int = 3, every_ms: int = 150, timeout_ms: int = 10000) -> list:
    """NODE_RECTS once ``reads`` reads ``every_ms`` apart agree (the canvas redraws, and Nodes 2.0 lays its nodes out,
    over a few frames after a load or a move)."""
    rects, same = graph_page.js(NODE_RECTS), 1
    for _ in range(timeout_ms // every_ms):
        graph_page.page.wait_for_timeout(every_ms)
        again = graph_page.js(NODE_RECTS)
        same = same + 1 if again == rects else 1
        rects = again
        if same == reads:
            return rects
    raise AssertionError(f"the node rectangles did not settle within {timeout_ms} ms: {rects}")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_bundled_workflow_nodes_do_not_overlap(graph_page, artifacts, workflow):
    """Every node of every bundled workflow stands clear of the others at the sizes this frontend gives
    them (title bars included; Nodes 2.0 nodes measured as the page lays them out), with MARGIN between
    them: the 1.58.1 classic canvas draws a node's source badge (about 20 units) above its title bar."""
    graph_page.load(json.loads(workflow.read_text()))
    graph_page.js(FIT, [1500 - 70, 950 - 90, 40])  # clear of the current frontend's side bar and top bar
    graph_page.js("() => { const ds = window.app.canvas.ds; ds.offset[0] += 60 / ds.scale; "
                  "ds.offset[1] += 80 / ds.scale; window.app.canvas.setDirty(true, true); }")
    rects = settled_rects(graph_page)
    assert all(r["dom"] == graph_page.mode.vue for r in rects)
    overlaps = [(a["name"], b["name"]) for i, a in enumerate(rects) for b in rects[i + 1:]
                if a["x"] < b["x"] + b["w"] + MARGIN and b["x"] < a["x"] + a["w"] + MARGIN
                and a["y"] < b["y"] + b["h"] + MARGIN and b["y"] < a["y"] + a["h"] + MARGIN]
    graph_page.page.screenshot(path=str(artifacts / f"workflow_{workflow.stem}.png"))
    assert overlaps == [], f"nodes closer than {MARGIN} units: {overlaps}; rectangles: {rects}"
