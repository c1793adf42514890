"""FreeU (Si et al.) as the paper uses it, with an exact low-frequency filter that needs no FFT.

FreeU scales the first half of a decoder block's backbone channels by b and the skip feature's
four lowest Fourier modes (frequency index 0 or -1 on each spatial axis: the centred 2x2 block of
the fftshift-ed spectrum) by s, keeping the real part. That projection has rank 3 per axis, so it
is two thin matrix products per feature map (see ``low_frequency_filter``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

VERSIONS = ("v1", "v2")


def freeu_scales(model_channels: int, b1: float, b2: float, s1: float, s2: float) -> dict[int, tuple[float, float]]:
    """(backbone, skip) factors keyed by the backbone channel count, as FreeU keys its decoder blocks."""
    return {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}


@lru_cache(maxsize=64)
def _axis_basis(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Real basis U (size x r) and rotation J (r x r) of the modes {0, -1} on one axis.

    With A = (1/size) sum_{k in {0,-1}} exp(2 pi i k (n - m) / size): Re A = U U^T / size and
    Im A = U J U^T / size, from cos(a - b) and sin(a - b) of the angles a = 2 pi n / size.
    """
    if size == 1:  # modes 0 and -1 coincide
        return torch.ones(1, 1, device=device), torch.zeros(1, 1, device=device)
    angle = torch.arange(size, dtype=torch.float64) * (2.0 * math.pi / size)
    basis = torch.stack([torch.ones_like(angle), angle.cos(), angle.sin()], dim=1)
    rotation = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    return basis.to(device, torch.float32), rotation.to(device, torch.float32)


def low_frequency_filter(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale the four lowest Fourier modes of each HxW map by ``scale`` (real part kept), without FFT.

    Equals ``fft_low_frequency_filter`` (threshold 1) to float32 round-off; computed in float32 and
    returned in x's dtype, on x's device.
    """
    if scale == 1.0:
        return x
    height, width = x.shape[-2:]
    u_h, j_h = _axis_basis(height, x.device)
    u_w, j_w = _axis_basis(width, x.device)
    x32 = x.float()
    coefficients = u_h.T @ (x32 @ u_w)  # (..., r, r): the map in the real low-frequency basis
    coefficients = (coefficients - j_h @ coefficients @ j_w.T) * ((scale - 1.0) / (height * width))
    return torch.matmul(u_h @ coefficients, u_w.T).add_(x32).to(x.dtype)


def fft_low_frequency_filter(x: torch.Tensor, scale: float, threshold: int = 1) -> torch.Tensor:
    """The FFT formulation of the same filter: scale the centred block of the shifted spectrum."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = x.shape[-2:]
    mask = torch.ones(height, width, device=x.device)
    mask[height // 2 - threshold:height // 2 + threshold, width // 2 - threshold:width // 2 + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def scale_backbone(h: torch.Tensor, factor: float, version: str) -> torch.Tensor:
    """Scale the first half of the backbone channels in place: by b (v1) or structure-aware (v2)."""
    half = h[:, : h.shape[1] // 2]
    if version == "v1":
        half.mul_(factor)
        return h
    # v2 (FreeU_V2): weight b by the channel-mean feature, min-max normalised per sample.
    mean = h.mean(1, keepdim=True)
    flat = mean.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    half.mul_((factor - 1.0) * ((mean - low) / (high - low)) + 1.0)
    return h
