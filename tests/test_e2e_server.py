"""End to end through a real ComfyUI server (main.py --cpu on a loopback port) with the pack installed.

A full-size SD1.5-architecture checkpoint with random weights (scripts/random_checkpoint.py, cached
outside the repository) is loaded by ComfyUI's own CheckpointLoaderSimple. Each bundled SD1.5 workflow
is posted to /prompt at a reduced resolution; the probe pack (scripts/eval_probe) counts the model
evaluations inside the server and records their sigmas, which must be the recipe's schedule.
Images from random weights are noise: these tests check wiring, counts, sizes and determinism.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from afs_reference import evaluated_sigmas
from comfyui_server import PromptFailed, PromptRejected
from e2e_support import (
    REPORT,
    evaluations,
    rss_mib,
    run_timed,
    saved_pixels,
    workflow_prompt,
    workflow_runner,
)
from PIL import Image

from fewstep.recipes import RECIPES
from fewstep.schedule import karras_sigmas, recipe_sigmas, standard_sigma_table

SIZE = 64  # pixels; latent 8 x 8 (the UNet still runs every block: 8 -> 4 -> 2 -> 1)
SD15_WORKFLOWS = {  # workflow -> (recipe, denoise)
    "fewstep_sd15_5step": ("SD1.5 5-step", 1.0),
    "fewstep_sd15_6step": ("SD1.5 6-step", 1.0),
    "fewstep_sd15_8step": ("SD1.5 8-step", 1.0),
    "fewstep_sd15_img2img": ("SD1.5 5-step", 0.6),
    "fewstep_sd15_6step_unipc": ("SD1.5 6-step UniPC", 1.0),  # Few-Step UniPC Sampler, no AFS
    "fewstep_sd15_5step_ksampler": ("SD1.5 5-step", 1.0),  # Few-Step KSampler: the whole recipe in one node
}
SEED = 11  # the end-to-end runs of every workflow (workflow_run)
COMPARISON_SEED = 12
TABLE = standard_sigma_table()


def expected_sigmas(recipe: str, denoise: float = 1.0) -> list[float]:
    """Where the recipe evaluates the model (N evaluations): its N+1 sigmas but the last; with the analytical
    first step (UniPC recipes of solver unipc_afs) the inserted midpoint instead of the first sigma
    (tests/afs_reference.py, written from RECIPES.md, on the random checkpoint's table: the standard one)."""
    sigmas = recipe_sigmas(RECIPES[recipe], TABLE, denoise).tolist()
    expected = evaluated_sigmas(sigmas, RECIPES[recipe].solver == "unipc_afs", TABLE.tolist())
    assert len(expected) == RECIPES[recipe].steps and sigmas[-1] not in expected
    return expected


def baseline_sigmas(steps: int = 20) -> list[float]:
    """ComfyUI's Karras schedule for SD1.5 (sigma_min / sigma_max of the table, rho 7) without the final 0."""
    return karras_sigmas(steps, float(TABLE[0]), float(TABLE[-1]), 7.0).tolist()


def assert_evaluated_at(groups: list[dict], sigmas: list[float], where: str):
    assert len(groups) == len(sigmas), f"{where}: {len(groups)} model evaluations, expected {len(sigmas)}"
    for i, (group, sigma) in enumerate(zip(groups, sigmas)):
        assert len(group["sigmas"]) == 1, f"{where}: evaluation {i} mixes sigmas {group['sigmas']}"
        assert group["sigmas"][0] == pytest.approx(sigma, rel=2e-4), f"{where}: evaluation {i}"


@pytest.fixture(scope="module")
def workflow_run(server):
    """Each workflow's run at SEED, shared by the end-to-end test and the KSampler identity test."""
    return workflow_runner(server, SIZE, SEED)


@pytest.fixture(scope="module")
def comparison(server):
    """fewstep_sd15_5step_vs_20step at COMPARISON_SEED (its 5-step branch is fewstep_sd15_5step's graph: at SEED
    ComfyUI could serve that branch from its cache): (history entry, evaluation groups, wall seconds)."""
    entry, prompt_id, seconds = run_timed(server, workflow_prompt(server, "fewstep_sd15_5step_vs_20step", SIZE,
                                                                  seed=COMPARISON_SEED))
    return entry, evaluations(server, prompt_id), seconds


def evaluation_span(groups: list[dict]) -> float:
    """Seconds from the first to the last of these evaluations (the probe's clock inside the server)."""
    return groups[-1]["time"] - groups[0]["time"]


@pytest.mark.parametrize("name", list(SD15_WORKFLOWS))
def test_sd15_workflow_end_to_end(server, workflow_run, name):
    recipe, denoise = SD15_WORKFLOWS[name]
    entry, groups, seconds = workflow_run(name)
    images = server.output_images(entry)
    assert len(images) == 1 and images[0].exists()
    with Image.open(images[0]) as image:
        assert image.size == (SIZE, SIZE)
    assert_evaluated_at(groups, expected_sigmas(recipe, denoise), name)
    assert all(g["shape"][-2:] == [SIZE // 8, SIZE // 8] and g["model"] == "BaseModel" for g in groups)
    REPORT.append(f"SD1.5 {SIZE}x{SIZE} CPU: {name}: {len(groups)} evaluations, {seconds:.2f} s from queueing to "
                  f"the image, {evaluation_span(groups):.2f} s from the first to the last evaluation")


def test_comparison_workflow_runs_both_samplers_from_the_same_noise(server, comparison):
    """Both branches run, each with its own schedule: the recipe's 5 sigmas and ComfyUI's 20-step Karras one
    (the demo's and the speed benchmark's baseline)."""
    entry, groups, seconds = comparison
    images = server.output_images(entry)
    assert len(images) == 2 and all(p.exists() for p in images)
    # ComfyUI may run the two branches in either order
    fewstep, karras = expected_sigmas("SD1.5 5-step"), baseline_sigmas()
    first = [g["sigmas"][0] for g in groups[:5]]
    if first == pytest.approx(fewstep, rel=2e-4):
        few, twenty = groups[:5], groups[5:]
    else:
        twenty, few = groups[:20], groups[20:]
    assert_evaluated_at(few, fewstep, "5-step branch")
    assert_evaluated_at(twenty, karras, "20-step branch")
    REPORT.append(f"SD1.5 {SIZE}x{SIZE} CPU: fewstep_sd15_5step_vs_20step: {len(groups)} evaluations (5 + 20), "
                  f"{seconds:.2f} s; from the first to the last evaluation "
                  f"{evaluation_span(few):.2f} s for the 5-step branch, {evaluation_span(twenty):.2f} s for the "
                  "20-step DPM++2M Karras one")


def latent_of(server, entry) -> torch.Tensor:
    """The image a prompt saved, as a float tensor (for equality and difference checks)."""
    (path,) = server.output_images(entry)
    with Image.open(path) as image:
        return torch.tensor(list(image.getdata()), dtype=torch.float32)


def test_ksampler_workflow_gives_the_five_node_workflow_image(server, workflow_run, comparison):
    """fewstep_sd15_5step_ksampler (Few-Step KSampler) and fewstep_sd15_5step (Few-Step Sigmas, DPM++ Sampler,
    Timed FreeU, SamplerCustom) at the same seed and size (the end-to-end test's runs): the same 5 evaluations and
    the same PNG pixels. The comparison workflow's 5-step branch is the five-node graph at another seed."""
    results = {}
    for name in ("fewstep_sd15_5step_ksampler", "fewstep_sd15_5step"):
        entry, groups, _ = workflow_run(name)
        assert_evaluated_at(groups, expected_sigmas("SD1.5 5-step"), name)
        results[name] = saved_pixels(server, entry)
    ksampler, five_nodes = results.values()
    assert ksampler[0] == (SIZE, SIZE) and len(set(ksampler[2])) > 16  # an image, not a constant
    assert ksampler == five_nodes, "Few-Step KSampler's image differs from the five-node graph's"
    other_seed = saved_pixels(server, comparison[0], prefix="fewstep_5step")
    assert other_seed != ksampler  # the comparison can fail: another seed, another image
    REPORT.append(f"SD1.5 {SIZE}x{SIZE} CPU: fewstep_sd15_5step_ksampler == fewstep_sd15_5step (seed {SEED}): "
                  "byte-identical pixels")


def with_cfg(prompt: dict, cfg: float) -> dict:
    """The prompt with every node's cfg input set to ``cfg``."""
    for node in prompt.values():
        if "cfg" in node["inputs"]:
            node["inputs"]["cfg"] = cfg
    return prompt


def test_twelve_prompts_at_once(server):
    """12 prompts queued together (5-, 6- and 8-step, six seeds, each prompt twice, never back to back):
    all finish, equal seeds give equal images and different seeds different ones, and the server's
    memory does not grow from the first six to the last six. At cfg 1, where ComfyUI evaluates the model once per
    step instead of twice (the workflows' own cfg is the end-to-end test's): a third of the time for the same
    queue of prompts."""
    names = ["fewstep_sd15_5step", "fewstep_sd15_6step", "fewstep_sd15_8step"]
    jobs = [(names[i % 3], 300 + i) for i in range(6)] * 2
    ids = [server.queue(with_cfg(workflow_prompt(server, name, SIZE, seed), 1.0)) for name, seed in jobs]
    entries, memory = [], []
    for prompt_id in ids:
        entries.append(server.wait(prompt_id, timeout=900))
        memory.append(rss_mib(server))
    images = [latent_of(server, entry) for entry in entries]
    for i in range(6):
        assert torch.equal(images[i], images[i + 6]), f"prompt {i} and {i + 6}: same workflow and seed differ"
        assert len(evaluations(server, ids[i])) == RECIPES[jobs[i][0].replace("fewstep_sd15_", "SD1.5 ")
                                                              .replace("step", "-step")].steps
    for i in range(6):
        for j in range(i + 1, 6):
            if jobs[i][0] == jobs[j][0]:
                assert not torch.equal(images[i], images[j]), f"prompts {i} and {j}: different seeds, same image"
    first, last = statistics.median(memory[:6]), statistics.median(memory[6:])
    REPORT.append(f"load: 12 prompts, server RSS median {first:.0f} MiB over the first six, {last:.0f} MiB over "
                  f"the last six (max {max(memory):.0f})")
    assert last <= first * 1.03 + 64, f"server memory grew: {first:.0f} -> {last:.0f} MiB"


def assert_still_serving(server, seed: int):
    """The next prompt runs: the 5-step workflow cut to a 2-step custom schedule (2 evaluations)."""
    prompt = workflow_prompt(server, "fewstep_sd15_5step", SIZE, seed=seed)
    node_of(prompt, "FewStepSigmas")[1]["inputs"].update(recipe="custom", steps=2)
    entry, prompt_id, _ = run_timed(server, prompt)
    assert len(evaluations(server, prompt_id)) == 2 and server.output_images(entry)[0].exists()


def rejected(server, prompt: dict) -> dict:
    with pytest.raises(PromptRejected) as info:
        server.queue(prompt)
    return info.value.error


def node_of(prompt: dict, kind: str) -> tuple[str, dict]:
    return next((k, v) for k, v in prompt.items() if v["class_type"] == kind)


def error_text(error: dict, node_id: str) -> str:
    node = error["node_errors"][node_id]
    return node["class_type"] + " " + " ".join(e.get("message", "") + " " + e.get("details", "")
                                               for e in node["errors"])


@pytest.mark.parametrize("case", ["steps out of range", "end_index past base_steps", "unknown recipe"])
def test_bad_input_is_rejected_naming_node_and_input(server, case):
    prompt = workflow_prompt(server, "fewstep_sd15_5step", SIZE, seed=21)
    node_id, sigmas = node_of(prompt, "FewStepSigmas")
    inputs = sigmas["inputs"]
    if case == "steps out of range":
        inputs.update(recipe="custom", steps=500)
        expected = ["FewStepSigmas", "steps"]
    elif case == "end_index past base_steps":  # inside each widget's range; only our check sees it
        inputs.update(recipe="custom", base_steps=8, end_index=8)
        expected = ["FewStepSigmas", "end_index", "allowed 1 to 7"]
    else:
        inputs["recipe"] = "SD2 5-step"
        expected = ["FewStepSigmas", "recipe", "SD2 5-step"]
    text = error_text(rejected(server, prompt), node_id)
    for word in expected:
        assert word in text, (word, text)
    # a new seed per case: an identical prompt would be served from ComfyUI's cache without running
    assert_still_serving(server, seed=22 + ["steps out of range", "end_index past base_steps",
                                            "unknown recipe"].index(case) * 100)


def test_execution_error_names_our_node_and_the_server_goes_on(server):
    """A model on Stable Cascade's noise schedule (which the pack has no schedule for) is only known at run time:
    Few-Step Sigmas stops with a clear execution error that ComfyUI reports with our node, and the next prompt
    runs."""
    prompt = workflow_prompt(server, "fewstep_sd15_5step", SIZE, seed=23)
    node_id, sigmas = node_of(prompt, "FewStepSigmas")
    prompt["900"] = {"class_type": "ModelSamplingStableCascade",
                     "inputs": {"model": sigmas["inputs"]["model"], "shift": 2.0}}
    sigmas["inputs"]["model"] = ["900", 0]
    with pytest.raises(PromptFailed) as info:
        server.run(prompt)
    messages = [m for m in info.value.entry["status"]["messages"] if m[0] == "execution_error"]
    assert messages, info.value.entry["status"]
    details = messages[0][1]
    assert details["node_type"] == "FewStepSigmas" and str(details["node_id"]) == node_id
    assert "Stable Cascade" in details["exception_message"] and "schedulers" in details["exception_message"]
    assert_still_serving(server, seed=24)


def tiny_sd3_unet(path):
    """A diffusion-model file of SD3's MMDiT architecture, shrunk (depth 1, width 64) so it is built in a
    second: ComfyUI's own detection reads SD3 from its keys. Built with the ComfyUI under test."""
    from comfy import supported_models
    from safetensors.torch import save_file

    config = {"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "out_channels": 16, "depth": 1,
              "input_size": None, "adm_in_channels": 32, "num_patches": 256, "pos_embed_max_size": 16,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 32, "out_features": 64}},
              "x_block_self_attn_layers": []}
    model = supported_models.SD3(config).get_model({})
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.02
             for k, v in model.diffusion_model.state_dict().items()}
    save_file(state, str(path))


def test_non_unet_model_passes_timed_freeu_with_one_warning(comfy, server):
    """A DiT (SD3's MMDiT) loaded by ComfyUI's UNETLoader into Timed FreeU: the prompt runs (the model passes
    through unchanged, so a workflow stays shareable across models) and the server log says why, once. PINNED
    (March 2024) predates every DiT that can be built small (its only one, Stable Cascade, has fixed multi-GB
    sizes), so this runs where the version has SD3."""
    from comfy import supported_models

    if not hasattr(supported_models, "SD3") or "PreviewAny" not in server.info:
        pytest.skip("this ComfyUI has no SD3 model class or PreviewAny output node (PINNED, March 2024)")
    tiny_sd3_unet(server.workdir / "models" / "diffusion_models" / "tiny-sd3.safetensors")
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-sd3.safetensors",
                                                           "weight_dtype": "default"}},
              "2": {"class_type": "TimedFreeU", "inputs": {"model": ["1", 0], "b1": 1.1, "b2": 1.1, "s1": 0.9,
                                                           "s2": 0.2, "version": "v1", "first_step": 1,
                                                           "last_step": -1, "start_percent": 0.0,
                                                           "end_percent": 1.0}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    warning = "Timed FreeU: this model (SD3) has no UNet decoder"
    before = server.log_path.read_text(errors="replace").count(warning)
    server.run(prompt)
    assert server.log_path.read_text(errors="replace").count(warning) == before + 1
    assert_still_serving(server, seed=25)


def test_tuner_workflow_tunes_within_its_budget_and_samples_with_the_result(server):
    """fewstep_sd15_tune_5step through the real server on the random-weight SD1.5 checkpoint: the tuner runs
    its 40-step reference and candidate 5-step schedules, stops by its time budget (the reference is
    never cut short, so the budget counts from the start but is only checked between candidates), and
    SamplerCustom then samples with a valid 5-evaluation schedule. At cfg 1 (one model call per evaluation: the
    40-step reference costs a third of the workflow's cfg 7.5)."""
    budget = 15.0
    prompt = with_cfg(workflow_prompt(server, "fewstep_sd15_tune_5step", SIZE, seed=31), 1.0)
    node_id, tuner = node_of(prompt, "FewStepScheduleTuner")
    tuner["inputs"].update(time_budget=budget, probe_seeds=1)
    tuning_latent = prompt[tuner["inputs"]["latent_image"][0]]["inputs"]
    tuning_latent["width"] = tuning_latent["height"] = SIZE
    entry, prompt_id, seconds = run_timed(server, prompt)
    assert server.output_images(entry)[0].exists()
    groups = evaluations(server, prompt_id)
    tuning, final = groups[:-5], groups[-5:]
    reference = tuning[:40]
    assert len(tuning) >= 45 and (len(tuning) - 40) % 5 == 0, len(tuning)  # reference + whole candidates
    final_sigmas = [g["sigmas"][0] for g in final]
    assert all(a > b > 0 for a, b in zip(final_sigmas, final_sigmas[1:])), final_sigmas
    assert final_sigmas[0] == pytest.approx(float(TABLE[-1]), rel=2e-4)  # starts at sigma_max
    span = tuning[-1]["time"] - tuning[0]["time"]
    reference_span = reference[-1]["time"] - reference[0]["time"]
    candidate = max(tuning[i + 4]["time"] - tuning[i]["time"] for i in range(40, len(tuning), 5))
    assert span <= max(budget, reference_span) + 2 * candidate + 1.0, (span, reference_span, candidate)
    REPORT.append(f"tuner (SD1.5 {SIZE}x{SIZE} CPU, budget {budget:.0f} s): {(len(tuning) - 40) // 5} candidate "
                  f"schedules after a 40-step reference ({reference_span:.1f} s), tuning {span:.1f} s, "
                  f"whole prompt {seconds:.1f} s")
