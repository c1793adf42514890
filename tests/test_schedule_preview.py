"""The schedule graph on Few-Step Sigmas: GET /fewstep/schedule on a real ComfyUI server, and
js/fewstep_sigmas.js in that server's own page, in real headless Chromium (Debian's package,
driven by Playwright; no browser download). Screenshots go to tests/artifacts/<pinned|current>/.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import urllib.parse
from pathlib import Path

import pytest
import torch
from build_thumbnails import CHROMIUM, CHROMIUM_ARGS
from comfyui_server import ComfyServer
from conftest import REPO
from workflow_api import to_api

from fewstep.recipes import CUSTOM, RECIPES
from fewstep.schedule import fewstep_sigmas, recipe_sigmas, standard_sigma_table

WORKFLOW = REPO / "workflows" / "fewstep_sd15_5step.json"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # the bundled workflow's loader lists it; nothing is queued
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


@pytest.fixture(scope="module")
def server(comfy, tmp_path_factory):
    """A real ComfyUI server (COMFYUI_PATH or PINNED) with the pack installed."""
    work = tmp_path_factory.mktemp("preview-server")
    placeholder = work / CHECKPOINT
    placeholder.write_bytes(b"")
    with ComfyServer(work / "server", checkpoints={CHECKPOINT: placeholder}) as running:
        yield running


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


def test_route_is_served_where_each_frontend_asks(server, comfy):
    # The old page calls /fewstep/schedule; the current one /api/fewstep/schedule (CURRENT only has /api/).
    paths = [ROUTE, "/api" + ROUTE] if comfy.current else [ROUTE]
    replies = [get(server, f"{path}?{query()}") for path in paths]
    assert all(status == 200 for status, _ in replies)
    assert all(reply == replies[0][1] for _, reply in replies)


BAD = [
    ({"steps": None}, "steps is missing"),
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
    # The route forwards the node's widget inputs (read from INPUT_TYPES) to the node's own schedule();
    # a widget that schedule() does not take would be silently left out of the graph.
    package = comfy.pack.__name__
    routes = importlib.import_module(f"{package}.nodes.routes")
    sigmas = importlib.import_module(f"{package}.nodes.sigmas")
    widgets = set(routes.widget_inputs())
    assert {"recipe", "denoise", *CUSTOM_WIDGETS} <= widgets
    assert widgets <= set(inspect.signature(sigmas.schedule).parameters)


# ---- the page ------------------------------------------------------------------------------------

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
def artifacts(comfy):
    folder = REPO / "tests" / "artifacts" / ("current" if comfy.current else "pinned")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class GraphPage:
    """The server's page with the bundled workflow loaded through it, and every console message."""

    def __init__(self, page):
        self.page = page
        self.messages = []  # (kind, text, where)
        self.expected_errors = set()
        page.on("console", lambda m: self.messages.append((m.type, m.text, m.location.get("url", ""))))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e), e.stack or "")))

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def node(self, script: str, arg=None):
        """Evaluate ``(node, arg) => ...`` on the workflow's Few-Step Sigmas node."""
        return self.js(f"([arg]) => ({script})(window.app.graph.findNodesByType('FewStepSigmas', [])[0], arg)", [arg])

    def settled(self) -> dict:
        """The node's schedule once the graph shows its widgets' schedule."""
        self.page.wait_for_function("() => window.__fewstep.idle()", timeout=20000)
        self.page.wait_for_function(
            "() => window.app.graph.findNodesByType('FewStepSigmas', [])[0].fewstepSchedule.plotted.length > 0 "
            "|| window.app.graph.findNodesByType('FewStepSigmas', [])[0].fewstepSchedule.error", timeout=20000)
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

    def click(self, name: str, right: float, down: float = 10) -> None:
        """A real mouse click on a widget of the node, ``right`` px from the node's right edge."""
        x, y = self.node("""(n, [name, right, down]) => { const w = n.widgets.find(w => w.name === name);
            const rect = window.app.canvas.canvas.getBoundingClientRect();
            const [cx, cy] = window.app.canvas.ds.convertOffsetToCanvas(
                [n.pos[0] + n.size[0] - right, n.pos[1] + w.last_y + down]);
            return [rect.left + cx, rect.top + cy]; }""", [name, right, down])
        self.page.mouse.click(x, y)

    def click_right_arrow(self, name: str) -> None:
        """Click the right arrow of a widget (next choice / one step up)."""
        self.click(name, 25)

    def show_node(self) -> None:
        self.node("""n => { const c = window.app.canvas; c.ds.scale = 1.4;
            c.ds.offset = [-n.pos[0] + 260, -n.pos[1] + 90]; c.setDirty(true, true); }""")
        self.page.wait_for_timeout(500)

    def screenshot(self, path: Path) -> None:
        self.show_node()
        box = self.node("""n => { const c = window.app.canvas; const r = c.canvas.getBoundingClientRect();
            const [x, y] = c.ds.convertOffsetToCanvas([n.pos[0] - 20, n.pos[1] - 50]);
            return {x: r.left + x, y: r.top + y,
                    width: (n.size[0] + 40) * c.ds.scale, height: (n.size[1] + 70) * c.ds.scale}; }""")
        self.page.screenshot(path=str(path), clip=box)
        self.page.screenshot(path=str(path.with_name(path.stem + "_page.png")))

    def errors_from_extension(self) -> list:
        return [m for m in self.messages if m[0] in ("error", "pageerror") and m not in self.expected_errors
                and any(word in " ".join(m).lower() for word in ("fewstep", "few-step"))]


@pytest.fixture(scope="module")
def graph_page(server, browser, comfy):
    if comfy.current:  # the new frontend greets a new user with the template browser over the canvas
        assert server.post_json("/settings/Comfy.TutorialCompleted", True)[0] == 200
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    graph = GraphPage(page)
    page.goto(server.url)
    page.wait_for_function(
        "() => window.app?.graph && window.__fewstep && LiteGraph.registered_node_types.FewStepSigmas", timeout=120000)
    graph.js("async (workflow) => { await window.app.loadGraphData(workflow); }", json.loads(WORKFLOW.read_text()))
    yield graph
    page.close()


def test_bundled_workflow_draws_the_python_schedule(graph_page, artifacts):
    schedule = graph_page.settled()
    expected = python_schedule("SD1.5 5-step")
    assert schedule["recipe"] == "SD1.5 5-step" and schedule["nfe"] == 5 and schedule["solver"] == "dpmpp_1s"
    assert schedule["sigmas"] == expected
    assert schedule["sigmas"] == pytest.approx(SD15_5STEP, rel=2e-5)
    plotted = schedule["plotted"]
    assert [p["step"] for p in plotted] == list(range(6))
    assert [p["sigma"] for p in plotted] == expected
    # drawn left to right, each lower than the last, inside the node: a log scale in sigma
    size = graph_page.node("n => [n.size[0], n.size[1]]")
    assert all(0 < p["x"] < size[0] and 0 < p["y"] < size[1] for p in plotted)
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
    graph_page.screenshot(artifacts / "fewstep_sigmas_named_recipe.png")


def test_plot_follows_recipe_and_custom_changes(graph_page, artifacts):
    graph_page.set_widget("recipe", "SD1.5 5-step")
    graph_page.settled()
    graph_page.show_node()
    graph_page.click_right_arrow("recipe")  # next choice: SD1.5 6-step
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
    graph_page.click_right_arrow("steps")  # 8 -> 9 with the mouse
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
    graph_page.screenshot(artifacts / "fewstep_sigmas_custom.png")


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
    graph_page.screenshot(artifacts / "fewstep_sigmas_freeu_percent.png")
    graph_page.js(set_freeu, ["start_percent", 0.0])
    graph_page.js(set_freeu, ["end_percent", 1.0])
    assert graph_page.settled()["freeu"][0]["steps"] == [1, 2, 3, 4, 5]


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


def test_saved_workflow_and_prompt_hold_only_the_node_inputs(graph_page, server):
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
    assert to_api(saved, server.object_info())[str(node["id"])]["inputs"] == inputs


def test_no_console_errors_from_the_extension(graph_page):
    before = graph_page.settled()
    graph_page.show_node()
    graph_page.click("fewstep_schedule", 150, 90)  # a click on the graph itself changes nothing
    graph_page.page.wait_for_timeout(300)
    assert graph_page.settled()["sigmas"] == before["sigmas"]
    names = graph_page.js("() => window.app.extensions.map(e => e.name)")
    assert "ComfyUI-FewStep.FewStepSigmas" in names  # registered through app.registerExtension
    assert graph_page.errors_from_extension() == []
