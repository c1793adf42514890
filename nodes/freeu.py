"""Timed FreeU: FreeU switched on only in a window of schedule steps and sigmas."""

from __future__ import annotations

import logging

from ..fewstep.freeu import VERSIONS, freeu_scales, low_frequency_filter, scale_backbone
from ..fewstep.window import STEP_LIMIT, Window, check_window, empty_window_message
from .comfy_api import model_sampling_of, schedule_of, unet_model_channels

log = logging.getLogger("ComfyUI-FewStep")

FACTOR = {"min": 0.0, "max": 10.0, "step": 0.01}


class TimedFreeU:
    DESCRIPTION = (
        "FreeU active only at chosen steps of the schedule and/or a range of noise levels. With the default "
        "window it is active at every step and equals core FreeU (v1) or FreeU_V2 (v2). Chain two nodes "
        "with different windows and values to give different steps different settings. The skip filter "
        "is exact and uses no FFT, so it runs on any device.")
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        step = {"min": -STEP_LIMIT, "max": STEP_LIMIT}
        return {"required": {
            "model": ("MODEL",),
            "b1": ("FLOAT", {"default": 1.1, **FACTOR,
                             "tooltip": "Backbone factor, deepest decoder stage (4 x model_channels)."}),
            "b2": ("FLOAT", {"default": 1.1, **FACTOR, "tooltip": "Backbone factor, next stage (2 x model_channels)."}),
            "s1": ("FLOAT", {"default": 0.9, **FACTOR, "tooltip": "Skip low-frequency factor, deepest stage."}),
            "s2": ("FLOAT", {"default": 0.2, **FACTOR, "tooltip": "Skip low-frequency factor, next stage."}),
            "version": (list(VERSIONS), {"default": VERSIONS[0], "tooltip": (
                "v1: FreeU as in the paper (core FreeU). v2: structure-aware backbone scaling (core FreeU_V2).")}),
            "first_step": ("INT", {"default": 1, **step, "tooltip": (
                "First active step, 1-based; negative counts from the end. Last 3 steps: first_step=-3, "
                "last_step=-1. Steps 2 to 4: first_step=2, last_step=4.")}),
            "last_step": ("INT", {"default": -1, **step,
                                  "tooltip": "Last active step, inclusive; -1 is the last step."}),
            "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": (
                "Active only from this point of the model's noise range (0 = pure noise)...")}),
            "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": (
                "...up to this point (1 = clean). Both the step and the percent window must hold.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, version, first_step, last_step, start_percent, end_percent):
        return _check(version, first_step, last_step, start_percent, end_percent) or True

    def patch(self, model, b1, b2, s1, s2, version, first_step, last_step, start_percent, end_percent):
        message = _check(version, first_step, last_step, start_percent, end_percent)
        if message:
            raise ValueError(f"Timed FreeU: {message}")
        scales = freeu_scales(unet_model_channels(model), b1, b2, s1, s2)
        model_sampling = model_sampling_of(model)
        window = Window(first_step, last_step, float(model_sampling.percent_to_sigma(start_percent)),
                        float(model_sampling.percent_to_sigma(end_percent)))
        always = window.every_step and start_percent == 0.0 and end_percent == 1.0
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
        return (patched,)


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


def _check(version, first_step, last_step, start_percent, end_percent) -> str | None:
    """Message for a bad input (named, with its allowed range), or None."""
    if version not in VERSIONS:
        return f"version = {version!r} is not one of {list(VERSIONS)}"
    return check_window(first_step, last_step, start_percent, end_percent)
