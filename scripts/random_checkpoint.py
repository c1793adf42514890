"""Full-size SD1.5 / SDXL-architecture checkpoints with RANDOM weights, for tests and benchmarks.

    python scripts/random_checkpoint.py sd15|sdxl      (prints the path; generates it when missing)

No weights can be downloaded here, so tests that need ComfyUI's real CheckpointLoaderSimple get a
checkpoint of the right architecture whose values are random. Key names and shapes come from the
ComfyUI under test (COMFYUI_PATH or PINNED): its UNet, text-encoder and VAE classes are built on the
meta device (no memory), and its own ``process_*_state_dict_for_saving`` gives checkpoint-format keys.
Values are seeded per key and streamed to an fp16 safetensors file one tensor at a time, so
generating SDXL needs well under 1 GB of RAM. Files are cached outside the repository in
``${FEWSTEP_CACHE:-~/.cache/comfyui-fewstep}/checkpoints/`` and never regenerated while present.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfyui_runtime import import_comfy  # noqa: E402

VERSION = "v1"  # bump when the values or the key set change, so stale caches are not reused
SEED = 20251002
ARCHES = ("sd15", "sdxl")

# The UNet configurations ComfyUI detects for the original SD1.5 and SDXL-base checkpoints.
UNET_CONFIGS = {
    "sd15": dict(
        use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
        adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
        use_linear_in_transformer=False, context_dim=768, num_heads=8,
        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        use_temporal_attention=False, use_temporal_resblock=False,
    ),
    "sdxl": dict(
        use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
        num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
        num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
        transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
        transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        use_temporal_attention=False, use_temporal_resblock=False,
    ),
}

# The KL-f8 autoencoder shared by SD1.5 and SDXL.
VAE_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                  ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)

SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def cache_dir() -> Path:
    """Where generated checkpoints live: ${FEWSTEP_CACHE:-~/.cache/comfyui-fewstep}/checkpoints."""
    root = os.environ.get("FEWSTEP_CACHE") or Path.home() / ".cache" / "comfyui-fewstep"
    return Path(root) / "checkpoints"


def checkpoint_path(arch: str) -> Path:
    """The cache path of the ``arch`` checkpoint (it may not exist yet)."""
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    return cache_dir() / f"random-{arch}-{VERSION}.safetensors"


def checkpoint_layout(arch: str) -> dict[str, torch.Tensor]:
    """Checkpoint-format keys of ``arch`` mapped to meta tensors (shapes), or to real tensors for
    the few values that are not weights (position ids)."""
    import_comfy()
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    unet_config = {k: list(v) if isinstance(v, list) else v for k, v in UNET_CONFIGS[arch].items()}
    model_config = (comfy.supported_models.SD15 if arch == "sd15" else comfy.supported_models.SDXL)(unet_config)
    model_config.set_inference_dtype(torch.float16, None)
    meta = torch.device("meta")
    with meta, torch.no_grad():  # PINNED's text encoder fills an eye() in place
        unet = model_config.get_model({}, device=meta).diffusion_model
        text_encoder = model_config.clip_target().clip(device=meta, dtype=torch.float16)
        vae = torch.nn.ModuleDict({
            "encoder": Encoder(**VAE_CONFIG),
            "decoder": Decoder(**VAE_CONFIG),
            "quant_conv": torch.nn.Conv2d(2 * VAE_CONFIG["z_channels"], 2 * VAE_CONFIG["z_channels"], 1),
            "post_quant_conv": torch.nn.Conv2d(VAE_CONFIG["z_channels"], VAE_CONFIG["z_channels"], 1),
        })
    layout = model_config.process_unet_state_dict_for_saving(unet.state_dict())
    layout.update(model_config.process_clip_state_dict_for_saving(text_encoder.state_dict()))
    layout.update(model_config.process_vae_state_dict_for_saving(vae.state_dict()))
    return layout


def random_value(key: str, like: torch.Tensor, seed: int = SEED) -> torch.Tensor:
    """A deterministic value for ``key``: N(0, 1/fan_in) for conv/linear weights, ones for norm
    weights, zeros for biases, N(0, 0.02^2) for embeddings, so activations stay finite."""
    if like.device.type != "meta":
        return like if not like.is_floating_point() else like.to(torch.float16)
    shape = tuple(like.shape)
    if key.endswith("bias") or len(shape) == 0:
        return torch.zeros(shape, dtype=torch.float16)
    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.float16)
    generator = torch.Generator().manual_seed(seed ^ zlib.crc32(key.encode()))
    std = 0.02 if "embedding" in key else torch.Size(shape[1:]).numel() ** -0.5
    return (torch.randn(shape, generator=generator) * std).to(torch.float16)


def write_safetensors(path: Path, layout: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``layout``'s values (made by ``random_value`` one at a time) as a safetensors file,
    streaming, so at most one tensor is in memory."""
    # Integer tensors first, so every tensor starts 8-byte aligned (the fp16 ones only need 2).
    keys = sorted(layout, key=lambda k: (layout[k].is_floating_point(), k))
    header, offset = {"__metadata__": metadata}, 0
    for key in keys:
        dtype = layout[key].dtype if not layout[key].is_floating_point() else torch.float16
        size = layout[key].numel() * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(layout[key].shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for key in keys:
            value = random_value(key, layout[key]).contiguous()
            file.write(value.numpy().tobytes())
        if file.tell() != 8 + len(encoded) + offset:
            raise RuntimeError(f"wrote {file.tell()} bytes to {path}, expected {8 + len(encoded) + offset}")


def random_checkpoint(arch: str) -> Path:
    """Path of the cached random-weight ``arch`` ("sd15" or "sdxl") checkpoint, generated if missing."""
    path = checkpoint_path(arch)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = checkpoint_layout(arch)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write_safetensors(partial, layout, {
            "format": "pt", "arch": arch, "seed": str(SEED),
            "note": "RANDOM weights for tests (ComfyUI-FewStep scripts/random_checkpoint.py); not a model",
        })
        os.replace(partial, path)  # atomic: a reader sees no file or the whole file
    finally:
        partial.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ARCHES:
        raise SystemExit(f"usage: python {sys.argv[0]} {'|'.join(ARCHES)}")
    print(random_checkpoint(sys.argv[1]))
