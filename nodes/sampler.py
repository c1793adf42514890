"""Few-Step DPM++ Sampler: the paper's DPM++1S / DPM++2M as a SAMPLER for SamplerCustom."""

from __future__ import annotations

from ..fewstep.plan import PlanError, dpmpp_solver
from ..fewstep.solver_names import FINISHES, SOLVERS
from .comfy_api import fewstep_sampler


class FewStepDPMPPSampler:
    DESCRIPTION = (
        "DPM++1S (first order) or DPM++2M (second order) exactly as in the paper, for schedules that end "
        "above zero such as Few-Step Sigmas. Passes the schedule to model patches, so Timed FreeU's step "
        "window works on every ComfyUI version. Refuses SIGMAS that do not descend strictly (each step by at "
        "least 0.01 %; a last sigma of 0 is fine) before any model evaluation.")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "solver": (list(SOLVERS), {"default": SOLVERS[0], "tooltip": (
                "dpmpp_1s: x' = (s'/s) x + (1 - s'/s) D (the 5- and 6-step recipes). dpmpp_2m: second "
                "order from the second step on, also on the last step (the 8-step recipes).")}),
            "finish": (list(FINISHES), {"default": FINISHES[0], "tooltip": (
                "last_sigma: return the latent at the last sigma, as the paper decodes it (N model "
                "evaluations for N+1 sigmas). denoised: one more evaluation at the last sigma and return its "
                "denoised prediction (N+1 evaluations). SamplerCustom's denoised_output gives the previous "
                "step's prediction at no cost.")}),
        }, "optional": {
            "params": ("STRING", {"default": "", "multiline": False, "tooltip": (
                "Optional: a params text with weights= and / or model_time= (Few-Step Schedule Tuner with learn), "
                "afs=1 or prediction=noise: this sampler then uses those per-step weights and model times, the "
                "analytical first step, steps on noise predictions. Give Few-Step Sigmas the same text "
                "(recipe 'custom') for the schedule they were tuned on; `solver` must be the one the text names.")}),
        }}

    def get_sampler(self, solver, finish, params=""):
        try:
            return (fewstep_sampler(dpmpp_solver(solver, finish, params=params or "")),)
        except PlanError as error:
            raise ValueError(f"Few-Step DPM++ Sampler: {error}") from None
