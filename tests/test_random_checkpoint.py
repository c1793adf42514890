"""Random-weight full-size checkpoints (scripts/random_checkpoint.py) through ComfyUI's REAL loader.

SD1.5 runs end to end here (file ~2.1 GB, generated once into the cache in ~30 s; loading peaks at
~7 GB RSS). SDXL is checked here through ComfyUI's own model detection on the checkpoint's key/shape
layout; its full load and sampling run in a real server in test_e2e_sdxl.py (with --fp16-unet).
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import pytest
import random_checkpoint as rc
import torch
from safetensors import safe_open

PROMPT = "a photo of a cat sitting on a red sofa"


def count_evaluations(model):
    """A clone whose UNet evaluations are counted (ComfyUI's own unet wrapper hook)."""
    counted, calls = model.clone(), []

    def wrapper(apply_model, args):
        calls.append(args["input"].shape)
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted, calls


@pytest.fixture(scope="module")
def checkpoints_folder(comfy):
    """A temporary models/checkpoints folder registered with ComfyUI's folder_paths."""
    import folder_paths

    with tempfile.TemporaryDirectory() as folder:
        folder_paths.add_model_folder_path("checkpoints", folder)
        yield Path(folder)


def load(comfy, folder: Path, arch: str):
    path = rc.random_checkpoint(arch)
    link = folder / path.name
    if not link.exists():
        link.symlink_to(path)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes (PINNED's CLIP init needs it)
        return path, comfy.nodes.CheckpointLoaderSimple().load_checkpoint(path.name)[:3]


def unload(comfy):
    from comfy import model_management

    model_management.unload_all_models()
    gc.collect()


def generate_once(comfy, model, clip, vae, latent_size: int):
    """CLIPTextEncode, ONE UNet evaluation (SamplerCustom, euler, sigmas [sigma_max, 0], cfg 1) and VAEDecode."""
    counted, calls = count_evaluations(model)
    with torch.inference_mode():
        positive = comfy.nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
        negative = comfy.nodes.CLIPTextEncode().encode(clip, "")[0]
        empty = comfy.nodes.EmptyLatentImage().generate(latent_size * 8, latent_size * 8, 1)[0]
        sampler = comfy.custom_sampler.KSamplerSelect().get_sampler("euler")[0]
        sigmas = torch.tensor([14.6146, 0.0])
        latent = comfy.custom_sampler.SamplerCustom().sample(
            counted, True, 3, 1.0, positive, negative, sampler, sigmas, empty)[0]["samples"]
        image = comfy.nodes.VAEDecode().decode(vae, {"samples": latent})[0]
    return positive, latent, image, calls


def test_cache_path_and_bad_arch(monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    assert rc.checkpoint_path("sd15") == tmp_path / "checkpoints" / f"random-sd15-{rc.VERSION}.safetensors"
    with pytest.raises(ValueError, match="arch must be one of sd15, sdxl"):
        rc.checkpoint_path("sd3")


def test_values_are_seeded_per_key_and_scaled_by_fan_in():
    conv = torch.empty(320, 4, 3, 3, device="meta")
    first = rc.random_value("model.diffusion_model.input_blocks.0.0.weight", conv)
    again = rc.random_value("model.diffusion_model.input_blocks.0.0.weight", conv)
    other = rc.random_value("model.diffusion_model.out.2.weight", conv)
    assert first.dtype == torch.float16 and torch.equal(first, again) and not torch.equal(first, other)
    assert abs(first.float().std().item() - 36 ** -0.5) < 0.01  # fan_in = 4 * 3 * 3
    embedding = rc.random_value("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                                torch.empty(49408, 768, device="meta"))
    assert abs(embedding.float().std().item() - 0.02) < 0.001
    assert torch.equal(rc.random_value("x.norm.weight", torch.empty(7, device="meta")), torch.ones(7).half())
    assert torch.equal(rc.random_value("x.proj.bias", torch.empty(7, device="meta")), torch.zeros(7).half())


def test_sdxl_layout_is_detected_as_sdxl_by_comfyui(comfy):
    """ComfyUI's own model detection on the SDXL checkpoint's keys and shapes (meta tensors: no memory)."""
    from comfy import latent_formats, model_detection, supported_models

    layout = rc.checkpoint_layout("sdxl")
    config = model_detection.model_config_from_unet(layout, "model.diffusion_model.")
    assert type(config) is supported_models.SDXL
    assert isinstance(config.latent_format, latent_formats.SDXL)
    assert sum(v.numel() for k, v in layout.items() if k.startswith("model.diffusion_model.")) == 2_567_463_684
    assert any(k.startswith("conditioner.embedders.1.model.transformer.resblocks.") for k in layout)
    assert any(k.startswith("first_stage_model.decoder.") for k in layout)


@pytest.mark.e2e
def test_sd15_loads_through_checkpoint_loader_simple(comfy, checkpoints_folder):
    from comfy import latent_formats, model_base, supported_models

    path, (model, clip, vae) = load(comfy, checkpoints_folder, "sd15")
    try:
        assert path.stat().st_size == 2_132_625_310
        base = model.model
        assert type(base.model_config) is supported_models.SD15
        assert isinstance(base.latent_format, latent_formats.SD15) and base.latent_format.scale_factor == 0.18215
        assert base.model_type == model_base.ModelType.EPS
        # The loader put OUR values in the model (not left-over initial values).
        with safe_open(str(path), "pt") as file:
            stored = file.get_tensor("model.diffusion_model.input_blocks.0.0.weight")
        loaded = base.diffusion_model.input_blocks[0][0].weight
        assert torch.equal(loaded.detach().to(torch.float16).cpu(), stored)

        cond, latent, image, calls = generate_once(comfy, model, clip, vae, latent_size=8)
        assert cond[0][0].shape == (1, 77, 768) and torch.isfinite(cond[0][0]).all()
        assert cond[0][1]["pooled_output"].shape == (1, 768)
        assert len(calls) == 1 and calls[0] == (1, 4, 8, 8)
        assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all() and latent.std() > 0.1
        assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all() and image.std() > 0.01
    finally:
        del model, clip, vae
        unload(comfy)
