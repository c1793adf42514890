"""The SDXL workflows end to end through a real ComfyUI server, on a full-size SDXL-architecture checkpoint
with random weights (about 7 GB on disk, about 13 GB in memory on the CPU), at a reduced resolution.

The 6-step workflow runs the reference's FreeU timing (two Timed FreeU nodes, steps 2..4 and 6..6)
on the real SDXL UNet; which steps they scale is checked per step in test_comfy_nodes.py. This module
starts its own server (--fp16-unet) once the session's SD1.5 server has unloaded its model, so only one
full-size model is in memory.
"""

from __future__ import annotations

import pytest
from afs_reference import evaluated_sigmas, midpoint
from e2e_support import (
    REPORT,
    free_memory_of_running_servers,
    saved_pixels,
    server_with_checkpoint,
    workflow_runner,
)

from fewstep.recipes import RECIPES
from fewstep.schedule import recipe_sigmas, standard_sigma_table

SIZE = 32  # pixels; latent 4 x 4 (SDXL's UNet has three levels: 4 -> 2 -> 1, every block still runs)
# One workflow per graph shape: the DPM++ five-node graph with two Timed FreeU windows, the UniPC one with the
# analytical first step, and Few-Step KSampler. The 8-step SDXL workflows are these graphs with other recipe numbers
# (test_workflows.py validates them in ComfyUI and checks every widget against its recipe); running them too cost
# about 100 s of the suite's 15 minutes for no wiring of their own.
SDXL_WORKFLOWS = {"fewstep_sdxl_6step": "SDXL 6-step",
                  # Few-Step UniPC Sampler with the analytical first step
                  "fewstep_sdxl_6step_unipc": "SDXL 6-step UniPC",
                  # Few-Step KSampler: the same recipe in one node
                  "fewstep_sdxl_6step_unipc_ksampler": "SDXL 6-step UniPC"}
SEED = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # One full-size model in memory at a time: the session's SD1.5 server (when a test started it already)
    # unloads its model first. --fp16-unet keeps the UNet's weights in fp16 (ComfyUI computes in fp32 on the
    # CPU): about 13 GB at peak instead of about 20 GB, so the test fits a 24 GB CI machine.
    free_memory_of_running_servers()
    with server_with_checkpoint(tmp_path_factory.mktemp("sdxl-server"), "sdxl", ["--fp16-unet"]) as server:
        yield server


@pytest.fixture(scope="module")
def workflow_run(server):
    """Each workflow's run at SEED, shared by the end-to-end test and the KSampler identity test: a full-size SDXL
    sampling on the CPU is the suite's dearest step."""
    return workflow_runner(server, SIZE, SEED)


@pytest.mark.parametrize("name", list(SDXL_WORKFLOWS))
def test_sdxl_workflow_end_to_end(server, workflow_run, name):
    recipe = RECIPES[SDXL_WORKFLOWS[name]]
    entry, groups, seconds = workflow_run(name)
    assert saved_pixels(server, entry)[0] == (SIZE, SIZE)
    table = standard_sigma_table()  # the random checkpoint's own (scaled linear betas)
    sigmas = recipe_sigmas(recipe, table).tolist()
    afs = recipe.solver == "unipc_afs"
    # N evaluations: sigma_0 .. sigma_{N-1}; with AFS the midpoint (tests/afs_reference.py), then sigma_1 ..
    expected = evaluated_sigmas(sigmas, afs, table.tolist())
    assert len(groups) == recipe.steps, f"{name}: {len(groups)} model evaluations, expected {recipe.steps}"
    for group, sigma in zip(groups, expected):
        assert group["sigmas"] == [pytest.approx(sigma, rel=2e-4)]
    seen = [g["sigmas"][0] for g in groups]
    assert all(abs(s - sigmas[-1]) > 1e-3 * sigmas[-1] for s in seen), f"{name}: the last sigma was evaluated"
    if afs:  # sigma_0 is not evaluated: the first evaluation is at the midpoint, between sigma_0 and sigma_1
        assert all(abs(s - sigmas[0]) > 1e-3 * sigmas[0] for s in seen), f"{name}: sigma_0 was evaluated"
        assert seen[0] == pytest.approx(midpoint(sigmas[0], sigmas[1], table.tolist())[0], rel=2e-4)
    assert all(g["model"] == "SDXL" and g["shape"][-2:] == [SIZE // 8, SIZE // 8] for g in groups)
    span = groups[-1]["time"] - groups[0]["time"]
    REPORT.append(f"SDXL {SIZE}x{SIZE} CPU: {name}: {len(groups)} evaluations, {seconds:.2f} s from queueing to the "
                  f"image, {span:.2f} s from the first to the last evaluation")


def test_ksampler_workflow_gives_the_five_node_workflow_image(server, workflow_run):
    """fewstep_sdxl_6step_unipc_ksampler (Few-Step KSampler) and fewstep_sdxl_6step_unipc (Few-Step Sigmas, UniPC
    Sampler with AFS, Timed FreeU, SamplerCustom) at the same seed and size (the end-to-end test's runs, which
    check that both evaluate the recipe's N sigmas): byte-identical PNG pixels."""
    ksampler, five_nodes, dpmpp = (saved_pixels(server, workflow_run(name)[0]) for name in (
        "fewstep_sdxl_6step_unipc_ksampler", "fewstep_sdxl_6step_unipc", "fewstep_sdxl_6step"))
    assert ksampler[0] == (SIZE, SIZE) and len(set(ksampler[2])) > 16  # an image, not a constant
    assert ksampler == five_nodes, "Few-Step KSampler's image differs from the five-node graph's"
    assert dpmpp != five_nodes  # the comparison can fail: DPM++, not UniPC, at the same seed differs
    REPORT.append(f"SDXL {SIZE}x{SIZE} CPU: fewstep_sdxl_6step_unipc_ksampler == fewstep_sdxl_6step_unipc "
                  f"(seed {SEED}): byte-identical pixels")
