"""Few-Step KSampler: a whole recipe (schedule, solver, timed FreeU, sampling) in one node.

It is the five-node graph, not a copy of it: the schedule is Few-Step Sigmas' ``get_sigmas``, the FreeU
patches are Timed FreeU's ``patch``, the sampler is Few-Step DPM++ / UniPC Sampler's ``get_sampler`` and the
sampling is what SamplerCustom does (``comfy_api.sample_custom_outputs``), so the result is bit-identical.
"""

from __future__ import annotations

from ..fewstep import recipes
from ..fewstep.params import parse_params
from ..fewstep.recipes import CUSTOM, DEFAULT_CUSTOM, RECIPE_CHOICES, RECIPES, recipe_for_step_count
from ..fewstep.solvers import FINISH_LAST_SIGMA, SOLVERS
from .comfy_api import sample_custom_outputs
from .freeu import TimedFreeU
from .sampler import FewStepDPMPPSampler
from .sigmas import FewStepSigmas
from .unipc_sampler import FewStepUniPCSampler

FREEU_CHOICES = ("recipe", "off")
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
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model (an original SD1.5 / SDXL checkpoint, LoRAs welcome)."}),
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
        return _check(recipe, freeu, denoise, params) or True

    def sample(self, model, seed, cfg, recipe, freeu, positive, negative, latent_image, denoise=1.0, params=""):
        message = _check(recipe, freeu, denoise, params if params is not None else "", linked=False)
        if message:
            raise ValueError(f"{NAME}: {message}")
        solver, settings = _solver_and_freeu(recipe, params)
        c = DEFAULT_CUSTOM
        try:
            sigmas = FewStepSigmas().get_sigmas(model, recipe, denoise, c.steps, c.base_steps, c.base_rho, c.end_index,
                                                c.time_rho, params=params or "")[0]
        except ValueError as error:
            raise ValueError(f"{NAME}: {str(error).removeprefix('Few-Step Sigmas: ')}") from None
        patched = model
        if freeu == "recipe":
            for s in settings:
                patched = TimedFreeU().patch(patched, s.b1, s.b2, s.s1, s.s2, "v1", s.first_step, s.last_step,
                                             0.0, 1.0)[0]
        if solver in SOLVERS:
            sampler = FewStepDPMPPSampler().get_sampler(solver, FINISH_LAST_SIGMA)[0]
        else:
            sampler = FewStepUniPCSampler().get_sampler("auto", "bh1", solver == "unipc_afs", FINISH_LAST_SIGMA,
                                                        "noise")[0]
        return sample_custom_outputs(patched, seed, cfg, positive, negative, sampler, sigmas, latent_image)


def recipe_freeu(recipe: str) -> tuple:
    """The FreeU settings ``freeu = recipe`` applies: a named recipe's own, none for ``custom`` (also served to
    the schedule graph on the node, nodes/routes.py)."""
    return RECIPES[recipe].freeu if recipe != CUSTOM else ()


def _solver_and_freeu(recipe: str, params: str):
    """(solver, FreeU settings) of a named recipe, or of a params string (its solver, else the recipe family's)."""
    if recipe != CUSTOM:
        return RECIPES[recipe].solver, recipe_freeu(recipe)
    parsed = parse_params(params)
    return parsed.solver or recipe_for_step_count(parsed.steps).solver, recipe_freeu(recipe)


def _check(recipe, freeu, denoise, params="", linked: bool = True) -> str | None:
    """Message for a bad input (named, with what is allowed), the same as Few-Step Sigmas gives, or None.

    ``params`` is None at validation when it is linked (CURRENT; PINNED leaves it out, so it is ""): then
    it is checked when the node runs.
    """
    if freeu not in FREEU_CHOICES:
        return f"freeu = {freeu!r} is not one of {list(FREEU_CHOICES)}"
    if recipe == CUSTOM and params is not None and not params.strip() and not linked:
        return ("recipe = 'custom' needs a schedule in `params` (Few-Step Schedule Tuner's params output, or text "
                "such as 'fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2'); or choose a "
                "named recipe")
    c = DEFAULT_CUSTOM
    verdict = FewStepSigmas.VALIDATE_INPUTS(recipe, c.steps, c.base_steps, c.base_rho, c.end_index, c.time_rho,
                                            denoise, params)
    return None if verdict is True else verdict  # a malformed params string included (it parses it)
