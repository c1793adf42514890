"""The proxy denoisers' network: a small UNet on the SD latent shape 4x8x8, pure torch (no ComfyUI import).

Its forward has the signature ComfyUI's BaseModel calls a diffusion model with,
``forward(x, timesteps, context=None, control=None, transformer_options={}, **kwargs)``: ``x`` is the scaled input
c_in * x (c_in = 1 / sqrt(sigma^2 + 1)), ``timesteps`` the discrete timestep of the model's table (0..999, what
``model_sampling.timestep(sigma)`` gives), ``context`` a (B, tokens, 11) one-hot class (10 = no class; ignored by
the unconditional networks). Like ComfyUI's UNetModel, the decoder runs the model's ``output_block_patch`` patches
(FreeU) on each skip connection before it is concatenated.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

CLASSES = 10
NULL_CLASS = CLASSES  # the dropped label: classifier-free guidance's unconditional branch
CONTEXT_DIM = CLASSES + 1
TIMESTEPS = 1000


def sd15_sigmas(zsnr: bool = False) -> torch.Tensor:
    """SD1.5's discrete table (scaled-linear betas 0.00085..0.012, 1000 steps) as sigmas, float64; with ``zsnr``
    rescaled to zero terminal SNR (Lin et al. 2023: sqrt(alpha_bar) shifted to 0 at the last step and scaled back to
    its first value; the last alpha_bar is set to 4.8973451890853435e-08, as ComfyUI does, so sigma_max is finite)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, TIMESTEPS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if zsnr:
        root = alphas_cumprod.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * (first / (first - last))
        alphas_cumprod = root ** 2
        alphas_cumprod[-1] = 4.8973451890853435e-08
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (float) timesteps, as in DDPM / SD: [cos, sin] of t at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(16, channels // 4), channels)


class ResBlock(nn.Module):
    """Pre-norm residual block with the time (and class) embedding added between its two 3x3 convolutions."""

    def __init__(self, channels_in: int, channels_out: int, embed_dim: int):
        super().__init__()
        self.norm1 = _norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, channels_out)
        self.norm2 = _norm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(functional.silu(self.norm1(x)))
        h = h + self.embed(emb)[:, :, None, None]
        h = self.conv2(functional.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a small feature map."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = _norm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class ProxyUNet(nn.Module):
    """A small UNet: one residual block per level on the way down (8x8, 4x4, 2x2), two on the way up with skip
    connections (the layout of SD's UNetModel with num_res_blocks=1), self-attention in the middle."""

    def __init__(self, in_channels: int = 4, model_channels: int = 48, channel_mult=(1, 2, 2),
                 conditional: bool = False, dtype=None, device=None, operations=None, **_ignored):
        super().__init__()
        self.model_channels = model_channels
        self.conditional = conditional
        self.dtype = dtype or torch.float32  # ComfyUI's BaseModel.get_dtype reads diffusion_model.dtype
        embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, embed_dim), nn.SiLU(),
                                        nn.Linear(embed_dim, embed_dim))
        self.class_embed = nn.Linear(CONTEXT_DIM, embed_dim, bias=False) if conditional else None
        widths = [model_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skips = [model_channels]
        width = model_channels
        for level, out in enumerate(widths):
            self.down_blocks.append(ResBlock(width, out, embed_dim))
            width = out
            skips.append(width)
            if level < len(widths) - 1:
                self.downsamples.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.mid1 = ResBlock(width, width, embed_dim)
        self.mid_attention = SelfAttention(width)
        self.mid2 = ResBlock(width, width, embed_dim)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(widths))):
            out = widths[level]
            for _ in range(2):
                self.up_blocks.append(ResBlock(width + skips.pop(), out, embed_dim))
                width = out
            if level > 0:
                self.upsamples.append(nn.Conv2d(width, width, 3, padding=1))
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def output_blocks(self) -> nn.ModuleList:
        """The decoder's residual blocks (UNetModel's name: the pack's Timed FreeU looks for a UNet decoder)."""
        return self.up_blocks

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        """The model output (eps or v, whichever it was trained for) at discrete ``timesteps``."""
        transformer_options = transformer_options or {}
        patches = transformer_options.get("patches", {}).get("output_block_patch", [])
        emb = self.time_embed(timestep_embedding(timesteps.reshape(-1).expand(x.shape[0]), self.model_channels))
        if self.class_embed is not None:
            if context is None:
                context = functional.one_hot(torch.full((x.shape[0],), NULL_CLASS, device=x.device), CONTEXT_DIM)
            else:
                context = context.mean(dim=1)
            emb = emb + self.class_embed(context.to(emb.dtype))
        h = self.conv_in(x)
        hs = [h]
        for level, block in enumerate(self.down_blocks):
            h = block(h, emb)
            hs.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
                hs.append(h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        ups = iter(self.upsamples)
        for index, block in enumerate(self.up_blocks):
            hsp = hs.pop()
            for patch in patches:
                h, hsp = patch(h, hsp, transformer_options)
            h = block(torch.cat([h, hsp], dim=1), emb)
            if index % 2 == 1 and index < len(self.up_blocks) - 1:
                h = next(ups)(functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(functional.silu(self.norm_out(h)))
