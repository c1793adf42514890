"""The proxies' data, from the files scikit-learn ships in its wheel (nothing is downloaded): grey photograph
patches and 8x8 digits, as 16x16 pictures in [0, 1] and as 4x8x8 latents (pixel-unshuffled, standardised)."""

from __future__ import annotations

import torch
from torch.nn import functional

PATCH = 16
PHOTO_TRAIN_COLUMNS = 512  # patches from columns 0..511 train; patches inside columns 512..639 are held out
DIGITS_TRAIN = 1500  # load_digits()' first 1500 train, the last 297 are held out


def grey_photos() -> list[torch.Tensor]:
    """load_sample_images()' two photographs as (H, W) grey float tensors in [0, 1] (ITU-R 601 luma)."""
    from sklearn.datasets import load_sample_images

    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    images = load_sample_images().images
    return [(torch.from_numpy(image.copy()).double() @ weights / 255.0).float() for image in images]


def photo_patches(count: int, generator: torch.Generator, held_out: bool = False, photos=None) -> torch.Tensor:
    """``count`` random 16x16 patches (count, 1, 16, 16): training patches (with random horizontal flips) or held-out
    ones (entirely inside the held-out columns, never flipped)."""
    photos = photos if photos is not None else grey_photos()
    which = torch.randint(len(photos), (count,), generator=generator)
    height, width = photos[0].shape
    lo, hi = (PHOTO_TRAIN_COLUMNS, width - PATCH) if held_out else (0, PHOTO_TRAIN_COLUMNS - PATCH)
    rows = torch.randint(height - PATCH + 1, (count,), generator=generator)
    cols = torch.randint(lo, hi + 1, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < (0.0 if held_out else 0.5)
    out = torch.empty(count, 1, PATCH, PATCH)
    for k in range(count):
        patch = photos[int(which[k])][int(rows[k]):int(rows[k]) + PATCH, int(cols[k]):int(cols[k]) + PATCH]
        out[k, 0] = patch.flip(-1) if flips[k] else patch
    return out


def photo_training_pixels(photos=None) -> torch.Tensor:
    """Every pixel of the training columns (what the photo latents are standardised by)."""
    photos = photos if photos is not None else grey_photos()
    return torch.cat([photo[:, :PHOTO_TRAIN_COLUMNS].reshape(-1) for photo in photos])


def digit_images(held_out: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """load_digits() as (N, 1, 16, 16) pictures in [0, 1] (values / 16, bilinearly upsampled) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0)[:, None]
    labels = torch.from_numpy(digits.target).long()
    part = slice(DIGITS_TRAIN, None) if held_out else slice(0, DIGITS_TRAIN)
    upsampled = functional.interpolate(images[part], scale_factor=2.0, mode="bilinear", align_corners=False)
    return upsampled.clamp(0.0, 1.0), labels[part]


def to_latent(images: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """(B, 1, 16, 16) pictures -> (B, 4, 8, 8) latents: standardised, pixel-unshuffled by 2."""
    return functional.pixel_unshuffle((images - shift) / scale, 2)


def to_image(latents: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """(B, 4, 8, 8) latents -> (B, 16, 16) pictures in [0, 1] (the inverse of ``to_latent``, clamped)."""
    return (functional.pixel_shuffle(latents.float(), 2)[:, 0] * scale + shift).clamp(0.0, 1.0)
