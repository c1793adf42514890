"""Timed FreeU: FreeU switched on only in a window of schedule steps and sigmas."""

from __future__ import annotations

from ..fewstep.freeu import VERSIONS
from ..fewstep.plan import PlanError, freeu_window
from ..fewstep.window import STEP_LIMIT
from .freeu_patch import timed_freeu

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
        return _problem(1.0, 1.0, 1.0, 1.0, version, first_step, last_step, start_percent, end_percent) or True

    def patch(self, model, b1, b2, s1, s2, version, first_step, last_step, start_percent, end_percent):
        try:
            freeu = freeu_window(b1, b2, s1, s2, version, first_step, last_step, start_percent, end_percent)
        except PlanError as error:
            raise ValueError(f"Timed FreeU: {error}") from None
        return (timed_freeu(model, freeu),)


def _problem(*inputs) -> str | None:
    """Message for a bad input (named, with its allowed range), or None."""
    try:
        freeu_window(*inputs)
    except PlanError as error:
        return str(error)
    return None
