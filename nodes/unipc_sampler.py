"""Few-Step UniPC Sampler: the F-scheduler's UniPC (with the analytical first step) as a SAMPLER."""

from __future__ import annotations

from ..fewstep.plan import PlanError, unipc_solver
from ..fewstep.solver_names import FINISHES
from ..fewstep.unipc import AUTO_ORDER_SWITCH, ORDERS, PREDICTIONS, VARIANTS
from .comfy_api import fewstep_sampler


class FewStepUniPCSampler:
    DESCRIPTION = (
        "UniPC as the paper's F-scheduler version runs it, for schedules that end above zero such as Few-Step "
        "Sigmas' UniPC recipes: noise-prediction form, B(h) = h, the UniC corrector at every step but the last "
        "(no extra model evaluation), lower order on the final step. N+1 sigmas cost N model evaluations, with "
        "or without the analytical first step. Passes the schedule to model patches, so Timed FreeU's step "
        "windows work on every ComfyUI version: step k is the k-th model evaluation, also with afs on.")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "order": (list(ORDERS), {"default": ORDERS[0], "tooltip": (
                f"auto: 1 up to {AUTO_ORDER_SWITCH - 1} model evaluations, 2 from {AUTO_ORDER_SWITCH} (the paper's "
                "recipes). 1, 2 or 3: that order, lowered on the first steps (while earlier model outputs are "
                "missing) and on the final steps.")}),
            "variant": (list(VARIANTS), {"default": VARIANTS[0], "tooltip": (
                "bh1: B(h) = h, as the paper. bh2: B(h) = e^h - 1 (ComfyUI's uni_pc_bh2 uses it).")}),
            "afs": ("BOOLEAN", {"default": False, "label_on": "on", "label_off": "off", "tooltip": (
                "Analytical first step: the model output at the first sigma is estimated from the start latent "
                "(pure noise) instead of evaluated, and a step is inserted at the midpoint in timestep space of "
                "the first two sigmas (on this model's noise schedule): still N evaluations for N+1 sigmas, the "
                "first at the inserted sigma. For txt2img (denoise 1): img2img starts are not pure noise. The "
                "SDXL UniPC recipes use it.")}),
            "finish": (list(FINISHES), {"default": FINISHES[0], "tooltip": (
                "last_sigma: return the latent at the last sigma, as the paper decodes it (N model evaluations "
                "for N+1 sigmas). denoised: one more evaluation at the last sigma and return its denoised "
                "prediction (N+1 evaluations).")}),
            "prediction": (list(PREDICTIONS), {"default": PREDICTIONS[0], "tooltip": (
                "noise: UniPC on the noise prediction, as the paper. data: on the denoised prediction, as "
                "ComfyUI's uni_pc / uni_pc_bh2 (which use order 3 and bh1 / bh2).")}),
        }}

    def get_sampler(self, order, variant, afs, finish, prediction="noise"):
        try:
            return (fewstep_sampler(unipc_solver(order, variant, afs, finish, prediction)),)
        except PlanError as error:
            raise ValueError(f"Few-Step UniPC Sampler: {error}") from None
