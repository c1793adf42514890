"""What newer ComfyUI (0.4 to 0.38: read, not runnable here) changes for the pack, tested on the ComfyUI under test.

Newer ComfyUI's UNet lets an output-block patch hand the next one ``hsp=None`` (an earlier patch took the
skip connection; the UNet then concatenates nothing). Timed FreeU must pass that through unchanged. PINNED
and CURRENT always concatenate, so the chain here ends with a patch that gives the skip back: what reaches
the UNet is then exactly what newer ComfyUI would see from the first two patches.

These tests call no core node class (newer ComfyUI turned them into V3 classes): only ComfyUI's sampling
functions and our nodes through NODE_CLASS_MAPPINGS, as ComfyUI does.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_UNET, latent

DEEP = TINY_UNET["model_channels"] * 4  # backbone channels of the blocks b1/s1 act on
FREEU = (1.3, 1.4, 0.8, 0.3)  # b1, b2, s1, s2: far from 1 so any action shows


def node(comfy, node_id):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def timed_freeu(comfy, model, version="v1", steps=(1, -1)):
    return node(comfy, "TimedFreeU").patch(model, *FREEU, version, *steps, 0.0, 1.0)[0]


def output_block_patches(model) -> list:
    return model.model_options["transformer_options"]["patches"]["output_block_patch"]


def sample(comfy, model, conds, seed=3):
    """5 steps of our DPM++1S on the SD1.5 5-step recipe, through ComfyUI's own sample_custom."""
    import comfy.sample as comfy_sample

    sigmas = node(comfy, "FewStepSigmas").get_sigmas(model, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
    sampler = node(comfy, "FewStepDPMPPSampler").get_sampler("dpmpp_1s", "last_sigma")[0]
    empty = latent()["samples"]
    noise = comfy_sample.prepare_noise(empty, seed)
    with torch.no_grad():
        return comfy_sample.sample_custom(model, noise, 5.5, sampler, sigmas, conds[0], conds[1], empty,
                                          disable_pbar=True, seed=seed)


def around(model, middle, before, after):
    """``before`` -> whatever ``middle(model)`` adds -> ``after``, as output-block patches in that order."""
    first = model.clone()
    first.set_model_output_block_patch(before)
    last = middle(first).clone()
    last.set_model_output_block_patch(after)
    return last


@pytest.mark.parametrize("version, steps", [("v1", (1, -1)), ("v2", (2, 4))], ids=["v1 every step", "v2 steps 2-4"])
def test_timed_freeu_passes_a_consumed_skip_through_in_the_real_unet(comfy, tiny_model, conds, version, steps):
    taken, seen = [], []

    def take_skip(h, hsp, transformer_options):  # an earlier patch that consumes the skip (newer ComfyUI allows it)
        taken.append(hsp)
        return h, None

    def give_back(h, hsp, transformer_options):  # what reaches the UNet's concatenation in newer ComfyUI
        seen.append((int(h.shape[1]), hsp is None, h.clone()))
        return h, taken.pop()

    def identity(h, hsp, transformer_options):
        return h, hsp

    without_freeu = sample(comfy, around(tiny_model, lambda m: m, take_skip, give_back), conds)
    records_without = seen[:]
    seen.clear()
    with_freeu = sample(comfy, around(tiny_model, lambda m: timed_freeu(comfy, m, version, steps), take_skip,
                                      give_back), conds)
    assert seen and all(hsp_is_none for _, hsp_is_none, _ in seen)  # Timed FreeU got hsp=None and returned it
    assert any(channels == DEEP for channels, _, _ in seen)  # ... also at the blocks it scales
    assert len(seen) == len(records_without)
    for (_, _, h_freeu), (_, _, h_plain) in zip(seen, records_without):
        assert torch.equal(h_freeu, h_plain)  # and left h exactly as the earlier patch returned it
    assert torch.equal(with_freeu, without_freeu)
    assert torch.isfinite(with_freeu).all()

    # The same chain with the skip left in place: Timed FreeU acts, so the equality above is not vacuous.
    plain = sample(comfy, around(tiny_model, lambda m: m, identity, identity), conds)
    acting = sample(comfy, around(tiny_model, lambda m: timed_freeu(comfy, m, version, steps), identity, identity),
                    conds)
    assert (acting - plain).abs().max() > 1e-3 * plain.abs().max()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_timed_freeu_patch_called_with_hsp_none_returns_its_inputs(comfy, tiny_model, version):
    """The patch function itself, as newer ComfyUI's UNet calls it after a patch that took the skip: no error,
    h untouched (same object, same values), hsp still None. It needs nothing from transformer_options then,
    not even for a step window."""
    for steps in [(1, -1), (2, 4)]:
        patch = output_block_patches(timed_freeu(comfy, tiny_model, version, steps))[-1]
        h = torch.randn(2, DEEP, 8, 8, generator=torch.Generator().manual_seed(0))
        before = h.clone()
        out_h, out_hsp = patch(h, None, {})
        assert out_hsp is None and out_h is h and torch.equal(h, before)

    # With a skip it does act (every-step window): backbone scaled, skip filtered.
    patch = output_block_patches(timed_freeu(comfy, tiny_model, version))[-1]
    hsp = torch.randn(2, DEEP, 8, 8, generator=torch.Generator().manual_seed(1))
    out_h, out_hsp = patch(before.clone(), hsp.clone(), {"sigmas": torch.tensor([1.0, 1.0])})
    assert not torch.equal(out_h, before) and out_hsp is not None and not torch.equal(out_hsp, hsp)
