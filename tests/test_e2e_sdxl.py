"""The SDXL workflows end to end through a real ComfyUI server, on a full-size SDXL-architecture checkpoint
with random weights (about 7 GB on disk, about 13 GB in memory on the CPU), at a reduced resolution.

The 6-step workflow runs the reference's FreeU timing (two Timed FreeU nodes, steps 2..4 and 6..6)
on the real SDXL UNet; which steps they scale is checked per step in test_comfy_nodes.py. This module
starts its own server after the SD1.5 one has stopped, so only one full-size model is in memory.
"""

from __future__ import annotations

import pytest
from afs_reference import evaluated_sigmas, midpoint
from e2e_support import REPORT, evaluations, run_timed, saved_pixels, server_with_checkpoint, workflow_prompt

from fewstep.recipes import RECIPES
from fewstep.schedule import recipe_sigmas, standard_sigma_table

SIZE = 64  # pixels; latent 8 x 8
SDXL_WORKFLOWS = {"fewstep_sdxl_6step": "SDXL 6-step", "fewstep_sdxl_8step": "SDXL 8-step",
                  # Few-Step UniPC Sampler with the analytical first step
                  "fewstep_sdxl_6step_unipc": "SDXL 6-step UniPC", "fewstep_sdxl_8step_unipc": "SDXL 8-step UniPC",
                  # Few-Step KSampler: the same recipe in one node
                  "fewstep_sdxl_6step_unipc_ksampler": "SDXL 6-step UniPC"}
SEED = 5
PIXELS: dict[str, tuple] = {}  # workflow -> (size, mode, raw pixel bytes) of its image at SEED


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # --fp16-unet keeps the UNet's weights in fp16 (ComfyUI computes in fp32 on the CPU): about 13 GB at
    # peak instead of about 20 GB, so the test fits a 24 GB CI machine
    with server_with_checkpoint(tmp_path_factory.mktemp("sdxl-server"), "sdxl", ["--fp16-unet"]) as server:
        yield server


@pytest.mark.parametrize("name", list(SDXL_WORKFLOWS))
def test_sdxl_workflow_end_to_end(server, name):
    recipe = RECIPES[SDXL_WORKFLOWS[name]]
    entry, prompt_id, seconds = run_timed(server, workflow_prompt(server, name, SIZE, seed=SEED))
    PIXELS[name] = saved_pixels(server, entry)
    assert PIXELS[name][0] == (SIZE, SIZE)
    groups = evaluations(server, prompt_id)
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
    REPORT.append(f"SDXL {SIZE}x{SIZE} CPU: {name}: {len(groups)} evaluations, {seconds:.2f} s "
                  "(first SDXL prompt includes loading the checkpoint)" if name.endswith("6step") else
                  f"SDXL {SIZE}x{SIZE} CPU: {name}: {len(groups)} evaluations, {seconds:.2f} s")


def test_ksampler_workflow_gives_the_five_node_workflow_image(server):
    """fewstep_sdxl_6step_unipc_ksampler (Few-Step KSampler) and fewstep_sdxl_6step_unipc (Few-Step Sigmas, UniPC
    Sampler with AFS, Timed FreeU, SamplerCustom) at the same seed and size: byte-identical PNG pixels.
    The images are the ones test_sdxl_workflow_end_to_end saved (it checks both evaluate the recipe's N sigmas);
    a full-size SDXL sampling on the CPU is the suite's dearest step, so a workflow is only run here when that
    test did not run it (deselected)."""
    for name in ("fewstep_sdxl_6step_unipc_ksampler", "fewstep_sdxl_6step_unipc"):
        if name not in PIXELS:
            entry, prompt_id, _ = run_timed(server, workflow_prompt(server, name, SIZE, seed=SEED))
            assert len(evaluations(server, prompt_id)) == RECIPES[SDXL_WORKFLOWS[name]].steps
            PIXELS[name] = saved_pixels(server, entry)
    ksampler, five_nodes = PIXELS["fewstep_sdxl_6step_unipc_ksampler"], PIXELS["fewstep_sdxl_6step_unipc"]
    assert ksampler[0] == (SIZE, SIZE) and len(set(ksampler[2])) > 16  # an image, not a constant
    assert ksampler == five_nodes, "Few-Step KSampler's image differs from the five-node graph's"
    if "fewstep_sdxl_6step" in PIXELS:  # (not when deselected) the comparison can fail: DPM++, not UniPC, differs
        assert PIXELS["fewstep_sdxl_6step"] != five_nodes
    REPORT.append(f"SDXL {SIZE}x{SIZE} CPU: fewstep_sdxl_6step_unipc_ksampler == fewstep_sdxl_6step_unipc "
                  f"(seed {SEED}): byte-identical pixels")
