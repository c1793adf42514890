"""The FFT-free low-frequency filter against an FFT filter, and the backbone scalings."""

import pytest
import torch

from fewstep.freeu import fft_low_frequency_filter, freeu_scales, low_frequency_filter, scale_backbone

# Skip features FreeU filters: SD1.5 at 512x512 (latent 64) and SDXL at 1024x1024 (latent 128),
# batch 2 for CFG, plus odd sizes from non-square or odd resolutions.
SHAPES = {
    "sd15-1280@16": (2, 1280, 16, 16), "sd15-640@32": (2, 640, 32, 32), "sd15-1280@8": (2, 1280, 8, 8),
    "sdxl-1280@32": (2, 1280, 32, 32), "sdxl-640@64": (2, 640, 64, 64),
    "odd": (1, 8, 13, 7), "thin": (1, 4, 1, 5), "two": (1, 4, 2, 3),
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("scale", [0.2, 0.9, 1.7])
def test_filter_equals_fft_float32(shape, scale):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    ours, fft = low_frequency_filter(x, scale), fft_low_frequency_filter(x, scale)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, fft, rtol=1e-5, atol=5e-6)
    assert (ours - x).abs().max() > 1e-3  # it did filter


@pytest.mark.parametrize("shape", [SHAPES["sd15-640@32"], SHAPES["sdxl-1280@32"], SHAPES["odd"]])
def test_filter_equals_fft_bfloat16(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    ours, fft = low_frequency_filter(x, 0.2), fft_low_frequency_filter(x, 0.2)
    assert ours.dtype == torch.bfloat16
    # both compute in float32 and round once: at most one bfloat16 step apart, almost always equal
    step = fft.float().abs().clamp_min(1e-3) * 2.0 ** -7
    assert ((ours.float() - fft.float()).abs() <= step).all()
    assert (ours == fft).float().mean() > 0.99


def test_filter_scales_only_the_four_lowest_modes():
    x = torch.randn(1, 1, 12, 10, dtype=torch.float64).float()
    spectrum_in = torch.fft.fft2(x.double())
    spectrum_out = torch.fft.fft2(low_frequency_filter(x, 0.5).double())
    ratio = (spectrum_out / spectrum_in)[0, 0]
    # Re(ifft(mask * X)) halves modes (0,0) exactly; modes (0,-1), (-1,0), (-1,-1) are scaled by 0.5
    # and their mirrors (0,1), (1,0), (1,1) pick up the conjugate part: (1 + 0.5) / 2 = 0.75.
    expected = torch.ones(12, 10, dtype=torch.complex128)
    for ky, kx in [(0, -1), (-1, 0), (-1, -1), (0, 1), (1, 0), (1, 1)]:
        expected[ky, kx] = 0.75
    expected[0, 0] = 0.5
    torch.testing.assert_close(ratio, expected, rtol=1e-4, atol=1e-4)


def test_scale_one_is_identity():
    x = torch.randn(1, 4, 8, 8)
    assert low_frequency_filter(x, 1.0) is x


def test_scales_keyed_by_model_channels():
    assert freeu_scales(320, 1.1, 1.2, 0.9, 0.2) == {1280: (1.1, 0.9), 640: (1.2, 0.2)}
    assert freeu_scales(32, 1.1, 1.2, 0.9, 0.2) == {128: (1.1, 0.9), 64: (1.2, 0.2)}


def test_backbone_v1_and_v2():
    h = torch.randn(2, 8, 4, 4)
    v1 = scale_backbone(h.clone(), 1.5, "v1")
    torch.testing.assert_close(v1[:, :4], h[:, :4] * 1.5)
    torch.testing.assert_close(v1[:, 4:], h[:, 4:])
    v2 = scale_backbone(h.clone(), 1.5, "v2")
    mean = h.mean(1, keepdim=True)
    for b in range(2):
        m = mean[b]
        weight = (m - m.min()) / (m.max() - m.min())
        torch.testing.assert_close(v2[b, :4], h[b, :4] * (0.5 * weight + 1.0))
    torch.testing.assert_close(v2[:, 4:], h[:, 4:])
