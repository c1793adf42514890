"""The trained proxies as REAL ComfyUI models: a ``comfy.model_base.BaseModel`` around ``ProxyUNet`` with ComfyUI's
own ModelSamplingDiscrete (EPS or V_PREDICTION, zero-terminal-SNR where the proxy was trained on it) or, for a flow
proxy, SD3's ModelSamplingDiscreteFlow + CONST (ModelType.FLOW, shift 3.0), wrapped in a ``ModelPatcher``, so core
schedulers, samplers, CFG and the pack's nodes apply exactly as to a checkpoint.

Import after ComfyUI is importable (its folder on sys.path, ``comfy.model_management`` set up). Works with the PINNED
ComfyUI (March 2024) and v0.3.64; the flow proxy needs a ComfyUI with flow model sampling (v0.3.64: PINNED has none,
and ``load_proxy`` says so).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.supported_models_base
import torch
from torch.nn import functional

from . import data
from .models import ARCHITECTURE, PROXIES, ProxySpec, manifest
from .network import CONTEXT_DIM, NULL_CLASS, ProxyUNet

_LOADED: dict[str, comfy.model_patcher.ModelPatcher] = {}


class ProxyWeightsError(RuntimeError):
    """A proxy's weights file is missing or differs from the hash in the committed manifest."""


class ProxyNeedsFlowSampling(RuntimeError):
    """A flow-matching proxy asked of a ComfyUI without flow model sampling (PINNED)."""


class ProxyConfig(comfy.supported_models_base.BASE):
    """model_config of a proxy: SD1.5's discrete table (scaled-linear betas 0.00085..0.012; ``zsnr`` is read by
    v0.3.64's ModelSamplingDiscrete and applied by hand on PINNED), latents used as they are (scale factor 1)."""

    unet_config = {}
    unet_extra_config = {}
    sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012}
    latent_format = comfy.latent_formats.LatentFormat
    memory_usage_factor = 1.0

    def __init__(self, unet_config: dict, zsnr: bool, flow_shift: float | None = None):
        if flow_shift is None:
            self.sampling_settings = dict(self.sampling_settings, zsnr=zsnr)
        else:  # ModelSamplingDiscreteFlow's settings, as SD3's model_config gives them
            self.sampling_settings = {"shift": flow_shift, "multiplier": 1000}
        super().__init__(dict(unet_config))


def _rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """ComfyUI's own rescale (comfy.model_sampling in v0.3.64, comfy_extras.nodes_model_advanced in PINNED)."""
    rescale = getattr(comfy.model_sampling, "rescale_zero_terminal_snr_sigmas", None)
    if rescale is None:
        from comfy_extras.nodes_model_advanced import rescale_zero_terminal_snr_sigmas as rescale
    return rescale(sigmas)


def weights_sha256(path: Path) -> str:
    """The SHA-256 of a weights file, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verified_state_dict(name: str, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The proxy's weights (``path``, default its shipped file), refused unless their SHA-256 is the manifest's."""
    from safetensors.torch import load_file

    spec = PROXIES[name]
    path = Path(path or spec.weights)
    expected = manifest().get(name, {}).get("sha256")
    if not path.is_file():
        raise ProxyWeightsError(f"proxy {name!r}: weights file {path} is missing (make train-proxies writes it)")
    actual = weights_sha256(path)
    if actual != expected:
        raise ProxyWeightsError(
            f"proxy {name!r}: weights file {path} has SHA-256 {actual}, but benchmarks/proxies/weights/manifest.json "
            f"records {expected}; restore the committed file (git checkout) or retrain with make train-proxies")
    return load_file(str(path))


def proxy_model(spec: ProxySpec, state_dict: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a BaseModel whose diffusion_model is ``ProxyUNet`` with ``state_dict`` (no hash check)."""
    unet_config = dict(ARCHITECTURE, conditional=spec.conditional)
    flow = spec.prediction == "flow"
    if flow and not hasattr(comfy.model_base.ModelType, "FLOW"):
        raise ProxyNeedsFlowSampling(f"proxy {spec.name!r} is a flow-matching model: this ComfyUI has no flow model "
                                "sampling (ModelType.FLOW, ModelSamplingDiscreteFlow); use ComfyUI 0.3.64 or later")
    config = ProxyConfig(unet_config, zsnr=spec.zsnr, flow_shift=spec.shift if flow else None)
    model_type = (comfy.model_base.ModelType.FLOW if flow else
                  comfy.model_base.ModelType.V_PREDICTION if spec.prediction == "v" else comfy.model_base.ModelType.EPS)
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=torch.device("cpu"), unet_model=ProxyUNet)
    sampling = model.model_sampling
    if spec.zsnr and float(sampling.sigma_max) < 1000.0:  # PINNED ignores sampling_settings["zsnr"]
        sampling.set_sigmas(_rescale_zero_terminal_snr(sampling.sigmas))
    model.diffusion_model.load_state_dict(state_dict, strict=True)
    model.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def load_proxy(name: str) -> comfy.model_patcher.ModelPatcher:
    """The shipped proxy ``name`` as a ComfyUI MODEL (hash-checked, built once per process)."""
    if name not in PROXIES:
        raise KeyError(f"unknown proxy {name!r}; known: {', '.join(PROXIES)}")
    if name not in _LOADED:
        _LOADED[name] = proxy_model(PROXIES[name], verified_state_dict(name))
    return _LOADED[name]


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    return functional.one_hot(labels.long().reshape(-1), CONTEXT_DIM).float()[:, None]


def proxy_conds(name: str, labels: torch.Tensor | None, batch: int) -> tuple[list, list]:
    """(positive, negative) conditioning as a sampler node receives them: a (batch, 1, 11) one-hot class as the
    cross-attention context. digits_cond: positive = ``labels`` (None: no class), negative = no class (index 10);
    the unconditional proxies ignore the context: both are the constant no-class context."""
    null = _one_hot(torch.full((batch,), NULL_CLASS))
    if PROXIES[name].conditional and labels is not None:
        if labels.numel() != batch:
            raise ValueError(f"proxy {name!r}: {labels.numel()} labels for a batch of {batch}")
        if int(labels.min()) < 0 or int(labels.max()) >= NULL_CLASS:
            raise ValueError(f"proxy {name!r}: labels must be classes 0..{NULL_CLASS - 1}")
        positive = _one_hot(labels)
    else:
        positive = null.clone()
    return [[positive, {}]], [[null, {}]]


def latent_to_image(name: str, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, 8, 8) latents of proxy ``name`` -> (B, 16, 16) grey pictures in [0, 1] (pixel-shuffle, un-standardise)."""
    entry = manifest()[name]
    return data.to_image(latents, entry["shift"], entry["scale"])
