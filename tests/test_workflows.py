"""The bundled workflows: they convert, pass ComfyUI's own validate_prompt, and match the node definitions.

In process, against the ComfyUI under test (PINNED or COMFYUI_PATH); the end-to-end runs through a
real server are in test_e2e_server.py. The converter's own rules are tested here too.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from workflow_api import WorkflowError, extra_slots, object_info_of, to_api, widget_inputs

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
EXPECTED = {"fewstep_sd15_5step", "fewstep_sd15_6step", "fewstep_sd15_8step", "fewstep_sdxl_6step",
            "fewstep_sdxl_8step", "fewstep_sd15_5step_vs_20step", "fewstep_sd15_img2img", "fewstep_sd15_tune_5step",
            "fewstep_sdxl_6step_unipc", "fewstep_sdxl_8step_unipc", "fewstep_sd15_6step_unipc",
            "fewstep_sd15_5step_ksampler", "fewstep_sdxl_6step_unipc_ksampler",
            "fewstep_sd35_8step_ksampler", "fewstep_flux_6step_ksampler"}
# Flow-model workflows: their nodes (EmptySD3LatentImage, FluxGuidance, ModelSamplingSD3 / Flux) are in ComfyUI from
# mid-2024, not in PINNED
FLOW = {"fewstep_sd35_8step_ksampler": ("SD3.5 8-step", 4.5, None),
        "fewstep_flux_6step_ksampler": ("Flux 6-step", 1.0, 3.5)}
TEST_CHECKPOINT = "fewstep-test-model.safetensors"
TEST_IMAGE = "fewstep-test-image.png"
FILE_WIDGETS = {
    ("CheckpointLoaderSimple", "ckpt_name"): ("v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors",
                                              "sd3.5_large_fp8_scaled.safetensors", "flux1-dev-fp8.safetensors"),
    ("LoadImage", "image"): ("example.png",),
}


def load(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def core(comfy, tmp_path_factory):
    """ComfyUI's node definitions (core + SamplerCustom's extras + this pack), and a models / input folder
    where the checkpoint and image names the workflows ask for exist (validation only looks them up)."""
    import folder_paths
    from PIL import Image

    nodes = comfy.nodes
    # SamplerCustom's module, registered by ComfyUI's own loader as main.py does. Not through the module's
    # NODE_CLASS_MAPPINGS: newer ComfyUI's V3 modules have none (they declare comfy_entrypoint instead).
    extras = Path(comfy.path) / "comfy_extras" / "nodes_custom_sampler.py"
    if "SamplerCustom" not in nodes.NODE_CLASS_MAPPINGS:
        assert comfy.run(nodes.load_custom_node(str(extras), set(nodes.NODE_CLASS_MAPPINGS))) is not False, extras
    for module, node in (("nodes_sd3.py", "EmptySD3LatentImage"), ("nodes_flux.py", "FluxGuidance"),
                         ("nodes_model_advanced.py", "ModelSamplingSD3")):
        path = Path(comfy.path) / "comfy_extras" / module  # the flow workflows' nodes, where this ComfyUI has them
        if path.exists() and node not in nodes.NODE_CLASS_MAPPINGS:
            assert comfy.run(nodes.load_custom_node(str(path), set(nodes.NODE_CLASS_MAPPINGS))) is not False, path
    models = tmp_path_factory.mktemp("models")
    (models / TEST_CHECKPOINT).write_bytes(b"")  # validate_prompt checks the name, it does not load it
    folder_paths.add_model_folder_path("checkpoints", str(models))
    image = Path(folder_paths.get_input_directory()) / TEST_IMAGE
    Image.new("RGB", (64, 48), (120, 30, 200)).save(image)
    yield nodes, object_info_of(nodes.NODE_CLASS_MAPPINGS)
    image.unlink()


def for_test(prompt: dict) -> dict:
    """The API prompt with the test checkpoint and image names."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = TEST_CHECKPOINT
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = TEST_IMAGE
    return prompt


def validate(comfy, prompt: dict):
    import execution

    if comfy.current:
        return comfy.run(execution.validate_prompt("test", prompt, None))
    return execution.validate_prompt(prompt)


def test_every_workflow_is_bundled():
    assert {p.stem for p in WORKFLOWS} == EXPECTED


def skip_flow_on_pinned(comfy, path: Path) -> None:
    if path.stem in FLOW and not comfy.current:
        pytest.skip("PINNED ComfyUI (March 2024) has no SD3 / Flux nodes (EmptySD3LatentImage, FluxGuidance)")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_passes_comfyui_validation(comfy, core, path):
    skip_flow_on_pinned(comfy, path)
    nodes, info = core
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:  # every node type exists (Note is the frontend's own)
        assert node["type"] == "Note" or node["type"] in nodes.NODE_CLASS_MAPPINGS, node["type"]
    prompt = for_test(to_api(workflow, info))
    valid, error, outputs, node_errors = validate(comfy, prompt)
    assert valid is True, (error, node_errors)
    assert outputs, "no output node"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_widget_values_match_the_node_definitions(comfy, core, path):
    """Each widget value has the declared type and lies in the declared range / choices."""
    skip_flow_on_pinned(comfy, path)
    _, info = core
    workflow = json.loads(path.read_text())
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 100, "one Note that explains the recipe"
    for node in workflow["nodes"]:
        if node["type"] == "Note":
            continue
        values = list(node["widgets_values"])
        for name, spec, _ in widget_inputs(info[node["type"]]):
            value = values.pop(0)
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            where = f"{path.stem} node {node['id']} {node['type']}.{name} = {value!r}"
            if (node["type"], name) in FILE_WIDGETS:  # the user's own files: a sensible default name
                assert value in FILE_WIDGETS[node["type"], name], where
            elif isinstance(kind, list):
                assert value in kind, where
            elif kind == "INT":
                assert isinstance(value, int), where
                assert options.get("min", -2**63) <= value <= options.get("max", 2**64), where
            elif kind == "FLOAT":
                assert isinstance(value, (int, float)), where
                assert options.get("min", -1e30) <= value <= options.get("max", 1e30), where
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), where
            elif kind == "STRING":
                assert isinstance(value, str), where
            if extra_slots(name, spec):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize", "image"), where
        assert values == [], f"{path.stem} node {node['id']}: extra widget values {values}"


def test_recipe_workflows_follow_the_recipes(core):
    """Sampler solver, guidance, resolution and Timed FreeU windows as fewstep/recipes.py says."""
    from fewstep.recipes import RECIPES

    _, info = core
    cases = (("fewstep_sd15_5step", "SD1.5 5-step", 7.5), ("fewstep_sd15_6step", "SD1.5 6-step", 7.5),
             ("fewstep_sd15_8step", "SD1.5 8-step", 7.5), ("fewstep_sdxl_6step", "SDXL 6-step", 5.5),
             ("fewstep_sdxl_8step", "SDXL 8-step", 5.5), ("fewstep_sdxl_6step_unipc", "SDXL 6-step UniPC", 5.5),
             ("fewstep_sdxl_8step_unipc", "SDXL 8-step UniPC", 5.5),
             ("fewstep_sd15_6step_unipc", "SD1.5 6-step UniPC", 7.5))
    for name, recipe_name, cfg in cases:
        recipe = RECIPES[recipe_name]
        prompt = to_api(load(name), info)
        by_type = {}
        for node in prompt.values():
            by_type.setdefault(node["class_type"], []).append(node["inputs"])
        assert by_type["FewStepSigmas"][0]["recipe"] == recipe_name
        if recipe.solver in ("unipc", "unipc_afs"):  # the recipe's UniPC: order auto, bh1, noise form, AFS or not
            assert "FewStepDPMPPSampler" not in by_type
            assert by_type["FewStepUniPCSampler"] == [{"order": "auto", "variant": "bh1", "finish": "last_sigma",
                                                       "afs": recipe.solver == "unipc_afs", "prediction": "noise"}]
        else:
            assert by_type["FewStepDPMPPSampler"][0]["solver"] == recipe.solver
            assert "FewStepUniPCSampler" not in by_type
        assert by_type["SamplerCustom"][0]["cfg"] == cfg
        assert by_type["EmptyLatentImage"][0]["width"] == recipe.resolution
        freeu = [(f["b1"], f["b2"], f["s1"], f["s2"], f["first_step"], f["last_step"])
                 for f in by_type.get("TimedFreeU", [])]
        assert freeu == [(f.b1, f.b2, f.s1, f.s2, f.first_step, f.last_step) for f in recipe.freeu], name


@pytest.mark.parametrize("name, recipe_name, cfg", [("fewstep_sd15_5step_ksampler", "SD1.5 5-step", 7.5),
                                                     ("fewstep_sdxl_6step_unipc_ksampler", "SDXL 6-step UniPC", 5.5)])
def test_ksampler_workflows_are_the_minimal_graph(core, name, recipe_name, cfg):
    """Loader, two prompts, empty latent, Few-Step KSampler (the recipe, its FreeU), decode, save and a Note; the
    same seed as the five-node workflow of the recipe."""
    from fewstep.recipes import RECIPES

    _, info = core
    workflow = load(name)
    assert sorted(n["type"] for n in workflow["nodes"]) == sorted(
        ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "FewStepKSampler",
         "VAEDecode", "SaveImage", "Note"])
    prompt = to_api(workflow, info)
    (sampler,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "FewStepKSampler"]
    five_nodes = to_api(load(name.removesuffix("_ksampler")), info)
    (custom,) = [n["inputs"] for n in five_nodes.values() if n["class_type"] == "SamplerCustom"]
    assert {k: sampler[k] for k in ("recipe", "freeu", "denoise", "cfg", "seed")} == {
        "recipe": recipe_name, "freeu": "recipe", "denoise": 1.0, "cfg": cfg, "seed": custom["noise_seed"]}
    assert custom["cfg"] == cfg
    (latent,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "EmptyLatentImage"]
    assert latent["width"] == latent["height"] == RECIPES[recipe_name].resolution
    (note,) = [n for n in workflow["nodes"] if n["type"] == "Note"]
    text = note["widgets_values"][0]
    assert "Few-Step KSampler" in text and name.removesuffix("_ksampler") in text


@pytest.mark.parametrize("name", sorted(FLOW))
def test_flow_workflows_run_the_flow_recipe_in_few_step_ksampler(comfy, core, name):
    """SD3.5 / Flux: loader, the model's shift node at its default, prompts, EmptySD3LatentImage at the recipe's
    resolution, Few-Step KSampler with the flow recipe, no FreeU (a DiT), the model's guidance (Flux dev: FluxGuidance
    on the positive prompt and cfg 1)."""
    from fewstep.recipes import RECIPES

    skip_flow_on_pinned(comfy, REPO / "workflows" / f"{name}.json")
    _, info = core
    recipe_name, cfg, flux_guidance = FLOW[name]
    workflow = load(name)
    shift_node = "ModelSamplingFlux" if flux_guidance else "ModelSamplingSD3"
    expected = ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptySD3LatentImage", shift_node,
                "FewStepKSampler", "VAEDecode", "SaveImage", "Note", *(["FluxGuidance"] if flux_guidance else [])]
    assert sorted(n["type"] for n in workflow["nodes"]) == sorted(expected)
    prompt = to_api(workflow, info)
    (key, sampler), = [(k, n) for k, n in prompt.items() if n["class_type"] == "FewStepKSampler"]
    inputs = sampler["inputs"]
    assert {k: inputs[k] for k in ("recipe", "freeu", "denoise", "cfg")} == {
        "recipe": recipe_name, "freeu": "off", "denoise": 1.0, "cfg": cfg}
    assert not RECIPES[recipe_name].freeu
    # the model through its shift node at the model's own default (what the recipe was tuned on)
    shift = prompt[inputs["model"][0]]
    assert shift["class_type"] == shift_node
    assert prompt[shift["inputs"]["model"][0]]["class_type"] == "CheckpointLoaderSimple"
    flux_shift = {"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024}
    expected = flux_shift if flux_guidance else {"shift": 3.0}
    assert {k: v for k, v in shift["inputs"].items() if k != "model"} == expected
    positive = prompt[inputs["positive"][0]]
    if flux_guidance is None:
        assert positive["class_type"] == "CLIPTextEncode"
    else:
        assert positive["class_type"] == "FluxGuidance" and positive["inputs"]["guidance"] == flux_guidance
        assert prompt[positive["inputs"]["conditioning"][0]]["class_type"] == "CLIPTextEncode"
    (latent,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "EmptySD3LatentImage"]
    assert latent["width"] == latent["height"] == RECIPES[recipe_name].resolution
    (note,) = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert recipe_name in note["widgets_values"][0] and "docs/flow_recipes.md" in note["widgets_values"][0]


# ---- the converter --------------------------------------------------------------------------------

def test_converter_output_wires_the_graph(core):
    _, info = core
    prompt = to_api(load("fewstep_sd15_5step"), info)
    types = {k: v["class_type"] for k, v in prompt.items()}
    assert "Note" not in types.values()
    custom = next(v for v in prompt.values() if v["class_type"] == "SamplerCustom")["inputs"]
    assert types[custom["sigmas"][0]] == "FewStepSigmas" and custom["sigmas"][1] == 0
    assert types[custom["model"][0]] == "TimedFreeU"
    assert custom["noise_seed"] == 42 and custom["add_noise"] is True  # the control value is not an input
    assert "control_after_generate" not in custom


def test_converter_rejects_an_unknown_node(core):
    _, info = core
    workflow = load("fewstep_sd15_5step")
    workflow["nodes"][0]["type"] = "NoSuchNode"
    with pytest.raises(WorkflowError, match=r"node 1 \(NoSuchNode.*unknown node type"):
        to_api(workflow, info)


def test_converter_rejects_a_wrong_number_of_widget_values(core):
    _, info = core
    workflow = load("fewstep_sd15_5step")
    sigmas = next(n for n in workflow["nodes"] if n["type"] == "FewStepSigmas")
    sigmas["widgets_values"].pop(2)
    with pytest.raises(WorkflowError, match=rf"node {sigmas['id']} \(FewStepSigmas\).*widget values"):
        to_api(workflow, info)
    custom = next(n for n in workflow["nodes"] if n["type"] == "SamplerCustom")
    workflow = load("fewstep_sd15_5step")
    custom = next(n for n in workflow["nodes"] if n["type"] == "SamplerCustom")
    custom["widgets_values"].remove("fixed")  # a seed without its control_after_generate value
    with pytest.raises(WorkflowError, match=rf"node {custom['id']} \(SamplerCustom"):
        to_api(workflow, info)


def test_converter_rejects_an_api_prompt(core):
    _, info = core
    with pytest.raises(WorkflowError, match="not a UI-format workflow"):
        to_api({"1": {"class_type": "KSampler", "inputs": {}}}, info)


def test_template_browser_lists_and_serves_every_workflow(comfy, server):
    """CURRENT's template browser: GET /workflow_templates lists our files under the pack's folder name and
    /api/workflow_templates/<pack>/<name>.json serves each one unchanged. PINNED (March 2024) predates
    the template browser (the route answers 404 there; users drop the files on the canvas)."""
    status, body = server.request("GET", "/workflow_templates")
    if not comfy.current:
        assert status == 404
        pytest.skip("PINNED ComfyUI (March 2024) has no template browser")
    assert status == 200
    listing = json.loads(body)
    assert sorted(listing["ComfyUI-FewStep"]) == sorted(EXPECTED)
    for path in WORKFLOWS:
        status, body = server.request("GET", f"/api/workflow_templates/ComfyUI-FewStep/{path.name}")
        assert status == 200 and json.loads(body) == json.loads(path.read_text()), path.name
        thumbnail = path.with_suffix(".jpg")  # the browser's card picture: same name, .jpg
        status, body = server.request("GET", f"/api/workflow_templates/ComfyUI-FewStep/{thumbnail.name}")
        assert status == 200 and body == thumbnail.read_bytes(), thumbnail.name


@pytest.mark.e2e
def test_template_browser_needs_no_thumbnails(comfy, tmp_path):
    """Newer ComfyUI's template route (0.38, app/custom_node_manager.py) lists and serves only <name>.json: a
    thumbnail is never served. So with no .jpg in the pack at all, CURRENT's real route must list every
    workflow, serve it unchanged, and what it serves must convert against the server's own /object_info."""
    from comfyui_server import PACK_NAME, ComfyServer
    from workflow_api import to_api

    if not comfy.current:
        pytest.skip("PINNED ComfyUI (March 2024) has no template browser")
    # The pack as the server sees it (ComfyServer keeps a folder that is already in place): our files,
    # with a workflows/ folder that holds the .json files only.
    pack = tmp_path / "custom_nodes" / PACK_NAME
    pack.mkdir(parents=True)
    for item in REPO.iterdir():
        if item.name not in ("workflows", ".git", ".venv", ".comfyui"):
            (pack / item.name).symlink_to(item, target_is_directory=item.is_dir())
    (pack / "workflows").mkdir()
    for path in WORKFLOWS:  # copies: the server's static route does not follow links out of the folder
        shutil.copyfile(path, pack / "workflows" / path.name)
    assert not list((pack / "workflows").glob("*.jpg"))

    with ComfyServer(tmp_path) as server:
        assert server.object_info()["FewStepSigmas"]  # the pack loaded from the copy
        status, body = server.request("GET", "/workflow_templates")
        assert status == 200
        assert sorted(json.loads(body)[PACK_NAME]) == sorted(EXPECTED)
        info = server.object_info()
        for path in WORKFLOWS:
            status, body = server.request("GET", f"/api/workflow_templates/{PACK_NAME}/{path.name}")
            assert status == 200 and json.loads(body) == json.loads(path.read_text()), path.name
            assert to_api(json.loads(body), info), path.name  # loads: every node and widget known to the server
            status, _ = server.request("GET", f"/api/workflow_templates/{PACK_NAME}/{path.stem}.jpg")
            assert status == 404, path.name  # no thumbnail, and nothing else needed it


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_workflow_has_a_thumbnail_of_its_current_version(path):
    """scripts/build_thumbnails.py writes <name>.jpg (800x600) with the SHA-256 of the workflow it shows
    in its JPEG comment: a workflow changed without re-making its thumbnail fails here."""
    from build_thumbnails import THUMBNAIL_SIZE, source_tag
    from PIL import Image

    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.exists(), "no thumbnail: run scripts/build_thumbnails.py (COMFYUI_PATH=<current ComfyUI>)"
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size == THUMBNAIL_SIZE
        assert image.info.get("comment", b"").decode() == source_tag(path), (
            f"{thumbnail.name} shows an older {path.name}: run scripts/build_thumbnails.py")
        # a picture of the graph, not a blank frame: many distinct colours
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 1000
