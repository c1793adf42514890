"""Few-Step KSampler: a whole recipe (schedule, solver, timed FreeU, sampling) in one node.

It is the five-node graph, not a copy of it: one plan (``fewstep.plan.make_plan``) gives the schedule Few-Step
Sigmas gives, the FreeU windows go on the model as Timed FreeU puts them (``freeu_patch.timed_freeu``), the
sampler is the one the Few-Step DPM++ / UniPC Sampler nodes make (``comfy_api.fewstep_sampler``) and the sampling
is what SamplerCustom does (``comfy_api.sample_custom_outputs``), so the result is bit-identical.
"""

from __future__ import annotations

from ..fewstep import recipes
from ..fewstep.plan import FREEU_CHOICES, Plan, PlanError, make_plan, plan_problem
from ..fewstep.recipes import CUSTOM, RECIPE_CHOICES
from .comfy_api import ModelTable, fewstep_sampler, sample_custom_outputs
from .freeu_patch import timed_freeu_windows
from .schedule_graph import schedule_ui

SEED_MAX = 0xFFFFFFFFFFFFFFFF
NAME = "Few-Step KSampler"


class FewStepKSampler:
    DESCRIPTION = (
        "The paper's whole recipe in one node: its early-stopping schedule, its solver (DPM++1S, DPM++2M or the "
        "F-scheduler's UniPC with the analytical first step) and its timed FreeU, sampled as SamplerCustom does. "
        "The same result, bit for bit, as the graph Few-Step Sigmas + Few-Step DPM++ / UniPC Sampler + Timed FreeU "
        "+ SamplerCustom. Returns the latent at the schedule's last (non-zero) sigma, as the paper decodes it.")
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    OUTPUT_TOOLTIPS = (
        "The latent at the schedule's last, non-zero sigma (what the paper decodes).",
        "The last model evaluation's denoised prediction (as SamplerCustom's denoised_output).")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": (
                "The model (an original SD1.5 / SDXL checkpoint, LoRAs welcome; flow models such as SD3 and Flux "
                "and EDM models are sampled on their own noise schedule, with recipes not yet tuned for them).")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "The noise seed (the same noise as SamplerCustom's noise_seed)."}),
            "cfg": ("FLOAT", {"default": 5.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Guidance scale (the paper: 5.5 or 7.5)."}),
            "recipe": (RECIPE_CHOICES, {"default": RECIPE_CHOICES[0], "tooltip": (
                "A recipe of the paper: its schedule, solver and FreeU (SD1.5 at 512x512, SDXL at 1024x1024; "
                "'UniPC' recipes are the F-scheduler's). 'custom': the schedule in `params` (from Few-Step "
                "Schedule Tuner), with the solver its `solver` field names.")}),
            "freeu": (list(FREEU_CHOICES), {"default": FREEU_CHOICES[0], "tooltip": (
                "recipe: the recipe's own FreeU windows and values (none for the 8-step DPM++ recipes and "
                "custom). off: no FreeU.")}),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": recipes.DENOISE_RANGE[0], "max": recipes.DENOISE_RANGE[1],
                                  "step": 0.01, "tooltip": (
                "img2img strength, as on Few-Step Sigmas: the same N steps, starting lower in timestep space. "
                "The UniPC recipes with the analytical first step (SDXL) assume a pure-noise start: for "
                "img2img prefer another recipe.")}),
        }, "optional": {
            "params": ("STRING", {"default": "", "multiline": False, "tooltip": (
                "recipe 'custom': a schedule as text, e.g. Few-Step Schedule Tuner's params output ('fewstep v1: "
                "steps=5 ... solver=dpmpp_2m'). Named recipes ignore it.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, recipe, freeu, denoise, params=""):
        if recipe == CUSTOM and not (params or "").strip():
            params = None  # linked (CURRENT passes None; PINNED leaves it out, so it reads ""): checked when it runs
        return plan_problem(recipe, denoise, params, freeu=freeu) or True

    def run(self, model, seed, cfg, recipe, freeu, positive, negative, latent_image, denoise=1.0, params=""):
        """What ComfyUI calls: the two latents of ``sample``, and in ``ui`` the schedule it sampled (on the model's
        own axis) for the graph on the node (js/fewstep_sigmas.js draws it after the run)."""
        table = ModelTable(model)
        plan = _plan(table, recipe, freeu, denoise, params)
        result = _sample(plan, model, seed, cfg, positive, negative, latent_image)
        return {"ui": schedule_ui(plan, table(), table.axis()), "result": result}

    def sample(self, model, seed, cfg, recipe, freeu, positive, negative, latent_image, denoise=1.0, params=""):
        """(the latent at the last sigma, the last denoised prediction), as SamplerCustom's two outputs."""
        plan = _plan(ModelTable(model), recipe, freeu, denoise, params)
        return _sample(plan, model, seed, cfg, positive, negative, latent_image)


def _plan(table: ModelTable, recipe, freeu, denoise, params) -> Plan:
    """The KSampler's plan on the model's table; a bad input raises the node's message."""
    try:
        return make_plan(recipe, denoise, params or "", freeu=freeu, sigma_table=table)
    except PlanError as error:
        raise ValueError(f"{NAME}: {error}") from None


def _sample(plan: Plan, model, seed, cfg, positive, negative, latent_image):
    """The five-node graph's sampling of ``plan``: its FreeU on the model, its solver in SamplerCustom's path."""
    patched = timed_freeu_windows(model, plan.freeu)
    return sample_custom_outputs(patched, seed, cfg, positive, negative, fewstep_sampler(plan.solver), plan.sigmas,
                                 latent_image)
