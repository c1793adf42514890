"""Timed FreeU as a model patch: what the Timed FreeU node and Few-Step KSampler put on a model clone."""

from __future__ import annotations

import logging

from ..fewstep.freeu import freeu_scales, low_frequency_filter, scale_backbone
from ..fewstep.plan import FreeUWindow
from ..fewstep.window import Window, empty_window_message
from .comfy_api import model_sampling_of, schedule_of, unet_model_channels

log = logging.getLogger("ComfyUI-FewStep")


def timed_freeu_windows(model, windows: tuple[FreeUWindow, ...]):
    """``model`` with each of ``windows`` applied in turn (``timed_freeu``); a model without a UNet decoder passes
    through unchanged with one warning in the log for all of them."""
    if windows and unet_model_channels(model) is None:
        _warn_no_unet(model)
        return model
    for window in windows:
        model = timed_freeu(model, window)
    return model


def _warn_no_unet(model) -> None:
    log.warning("Timed FreeU: this model (%s) has no UNet decoder (a DiT such as SD3, Flux or Wan); FreeU applies to "
                "UNet models only (SD1.x, SD2.x, SDXL), so the model passes through unchanged.",
                type(model.model).__name__)


def timed_freeu(model, freeu: FreeUWindow):
    """A clone of ``model`` whose UNet decoder applies ``freeu`` at the evaluations its window holds; ``model``
    itself, with a warning in the log, when it has no UNet decoder (workflows stay shareable across models)."""
    channels = unet_model_channels(model)
    if channels is None:
        _warn_no_unet(model)
        return model
    scales = freeu_scales(channels, freeu.b1, freeu.b2, freeu.s1, freeu.s2)
    model_sampling = model_sampling_of(model)
    window = Window(freeu.first_step, freeu.last_step, float(model_sampling.percent_to_sigma(freeu.start_percent)),
                    float(model_sampling.percent_to_sigma(freeu.end_percent)))
    always = window.every_step and freeu.start_percent == 0.0 and freeu.end_percent == 1.0
    version = freeu.version
    decided = [None, False]  # (sigmas tensor of the current evaluation, active?)
    warned = set()  # schedule lengths already warned about (an empty step window)

    def output_block_patch(h, hsp, transformer_options):
        scale = scales.get(int(h.shape[1]))
        # Newer ComfyUI lets an earlier patch consume the skip (hsp=None): no skip to filter, and h may no
        # longer be the plain backbone, so this block is left exactly as that patch returned it.
        if scale is None or hsp is None:
            return h, hsp
        if not always:
            sigmas = transformer_options["sigmas"]
            if decided[0] is not sigmas:  # one look-up per model evaluation, not per block
                decided[:] = [sigmas, _active(window, sigmas, transformer_options, warned)]
            if not decided[1]:
                return h, hsp
        return scale_backbone(h, scale[0], version), low_frequency_filter(hsp, scale[1])

    patched = model.clone()
    patched.set_model_output_block_patch(output_block_patch)
    return patched


def _active(window: Window, sigmas, transformer_options: dict, warned: set) -> bool:
    """Whether ``window`` holds at this evaluation; logs a warning, once per schedule length, when its steps
    select no step of the schedule (mixed-sign steps on a short schedule, or steps beyond its end)."""
    schedule = schedule_of(transformer_options)
    if schedule is not None and not window.every_step and len(schedule) not in warned:
        warned.add(len(schedule))
        message = empty_window_message(window.first_step, window.last_step, len(schedule) - 1)
        if message:
            log.warning("Timed FreeU: %s", message)
    return window.active(float(sigmas.max()), schedule)
