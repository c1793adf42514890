"""The trained proxy denoisers: what each one is, and where its weights are (no ComfyUI, no scikit-learn import).

Each is a small UNet (``network.ProxyUNet``) trained on CPU by ``scripts/train_proxies.py`` (``make train-proxies``)
with the standard discrete-time objective on SD1.5's table, so that ComfyUI's ModelSamplingDiscrete (timestep(sigma)
conditioning, c_in = 1/sqrt(sigma^2+1), calculate_denoised for eps / v) is exactly what it was trained for; or, for
``flow``, with the rectified-flow objective that ComfyUI's CONST model sampling (SD3's ModelSamplingDiscreteFlow,
timestep = 1000 sigma, c_in = 1, D = x - sigma * output) is made for.
``weights/manifest.json`` records each file's SHA-256, data scaling, parameters, steps, seconds and final loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS / "manifest.json"

# The network's hyperparameters (ComfyUI's model_config.unet_config; "model_channels" is what FreeU keys its scales
# by: this network's 4x4 and 2x2 levels have model_channels * 2 channels, so a FreeU patch acts there with b2/s2).
ARCHITECTURE = {"in_channels": 4, "model_channels": 32, "channel_mult": (1, 2, 2)}


@dataclass(frozen=True)
class ProxySpec:
    """One trained proxy: its data, its prediction and table, the guidance scales a benchmark samples it at."""

    name: str
    data: str
    prediction: str  # "eps" or "v" (ModelSamplingDiscrete), or "flow" (v = eps - x0, ModelSamplingDiscreteFlow + CONST)
    zsnr: bool
    conditional: bool
    cfgs: tuple[float, ...]
    latent_shape: tuple[int, int, int] = (4, 8, 8)
    weights: Path = field(default=WEIGHTS)
    note: str = ""
    shift: float = 1.0  # "flow": the shift of its ModelSamplingDiscreteFlow (SD3's 3.0)


_PHOTO = ("16x16 grey patches (ITU-R 601 luma) of scikit-learn's load_sample_images() photographs (china.jpg, "
          "flower.jpg), random crops with horizontal flips from columns 0..511 (columns 512..639 held out), "
          "pixel-unshuffled (factor 2) to 4x8x8, standardised by the training pixels' mean and standard deviation")
_DIGITS = ("scikit-learn's load_digits() 8x8 digits (values 0..16, 10 classes; the first 1500 for training, the "
           "last 297 held out), bilinearly upsampled to 16x16, pixel-unshuffled (factor 2) to 4x8x8, standardised "
           "by the training pixels' mean and standard deviation")
_NET = ("ProxyUNet (benchmarks/proxies/network.py): 32/64/64 channels at 8x8/4x4/2x2, one residual block per level "
        "down and two up with skips, self-attention in the middle, sinusoidal embedding of ComfyUI's timestep")

PROXIES: dict[str, ProxySpec] = {
    "photo_eps": ProxySpec(
        name="photo_eps", data=_PHOTO, prediction="eps", zsnr=False, conditional=False, cfgs=(1.0,),
        weights=WEIGHTS / "photo_eps.safetensors",
        note=f"eps-prediction on SD1.5's discrete table (the paper's setting). {_NET}."),
    "photo_v_zsnr": ProxySpec(
        name="photo_v_zsnr", data=_PHOTO, prediction="v", zsnr=True, conditional=False, cfgs=(1.0,),
        weights=WEIGHTS / "photo_v_zsnr.safetensors",
        note=("v-prediction on SD1.5's table rescaled to zero terminal SNR (ComfyUI's ModelSamplingDiscrete "
              f"zsnr=True: sigma_max about 4519). {_NET}.")),
    "digits_cond": ProxySpec(
        name="digits_cond", data=_DIGITS, prediction="eps", zsnr=False, conditional=True, cfgs=(1.0, 5.0),
        weights=WEIGHTS / "digits_cond.safetensors",
        note=("eps-prediction on SD1.5's discrete table, class-conditional: the label is a one-hot (B, 1, 11) "
              "cross-attention context (index 10 = no label), dropped to index 10 in 12 % of training samples so "
              f"that classifier-free guidance works. {_NET}, plus a class embedding added to the time embedding.")),
    "photo_flow": ProxySpec(
        name="photo_flow", data=_PHOTO, prediction="flow", zsnr=False, conditional=False, cfgs=(1.0,),
        weights=WEIGHTS / "photo_flow.safetensors", shift=3.0,
        note=("rectified flow (flow matching), SD3's objective: x_t = (1 - t) x0 + t eps with t uniform in (0, 1) (the "
              "original rectified flow's t sampling, one SD3 compared; not its logit-normal: uniform also trains "
              "the ends, where shift 3 puts the first steps and a many-step reference its last), "
              "the network given (x_t, 1000 t) regresses v = eps - x0, so ComfyUI's CONST model sampling gives "
              "D = x - sigma v; loaded with SD3's ModelSamplingDiscreteFlow, shift 3.0 (ComfyUI 0.3.64 and later: "
              f"PINNED has no flow model sampling). {_NET}.")),
}


def manifest() -> dict:
    """The committed manifest: per proxy, the weights' SHA-256, data scaling and training record."""
    return json.loads(MANIFEST.read_text())
