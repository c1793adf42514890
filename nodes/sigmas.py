"""Few-Step Sigmas: the paper's early-stopping schedule for the connected model."""

from __future__ import annotations

from ..fewstep import recipes
from ..fewstep.params import ScheduleParams
from ..fewstep.plan import Plan, PlanError, make_plan, plan_problem
from ..fewstep.recipes import DEFAULT_CUSTOM, RECIPE_CHOICES
from .comfy_api import ModelTable
from .schedule_graph import schedule_ui


class FewStepSigmas:
    DESCRIPTION = (
        "The early-stopping schedule of 'Hyperparameters are all you need' (arXiv 2510.02390): N+1 sigmas "
        "spaced in timestep space, ending at a small non-zero sigma, so N model evaluations. Use with "
        "Few-Step DPM++ Sampler in SamplerCustom. Named recipes reproduce the paper; 'custom' uses the "
        "parameters below. Values whose schedule would repeat a sigma (a step below 0.01 %) are refused.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("N+1 sigmas, descending, the last one above zero (no zero appended).",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        c = DEFAULT_CUSTOM
        return {"required": {
            "model": ("MODEL", {"tooltip": (
                "The schedule's timesteps (those of the standard SD1.x / SDXL schedule) are read on this model's "
                "own noise schedule: v-prediction and zero-terminal-SNR models start at their own first sigma and "
                "stop at the recipe's timestep; flow models (SD3, Flux) start at sigma 1 and follow their shift "
                "(ModelSamplingSD3 / Flux); continuous EDM models span their sigma range.")}),
            "recipe": (RECIPE_CHOICES, {"default": RECIPE_CHOICES[0], "tooltip": (
                "A recipe of the paper (SD1.5 at 512x512, SDXL at 1024x1024), or 'custom' to use the "
                "parameters below. Named recipes ignore them.")}),
            "denoise": ("FLOAT", {"default": 1.0, "min": recipes.DENOISE_RANGE[0], "max": recipes.DENOISE_RANGE[1],
                                  "step": 0.01, "tooltip": (
                "img2img strength. Below 1 the schedule starts lower in timestep space: "
                "t_start = t_end + denoise * (999 - t_end), still N steps ending at the same sigma.")}),
            "steps": ("INT", {"default": c.steps, "min": recipes.STEPS_RANGE[0], "max": recipes.STEPS_RANGE[1],
                              "tooltip": "custom: N, the number of model evaluations."}),
            "base_steps": ("INT", {"default": c.base_steps, "min": recipes.BASE_STEPS_RANGE[0],
                                   "max": recipes.BASE_STEPS_RANGE[1],
                                   "tooltip": "custom: n, length of the base Karras list that sets the end point."}),
            "base_rho": ("FLOAT", {"default": c.base_rho, "min": recipes.RHO_RANGE[0], "max": recipes.RHO_RANGE[1],
                                   "step": 0.1, "tooltip": "custom: rho of the base Karras list."}),
            "end_index": ("INT", {"default": c.end_index, "min": recipes.END_INDEX_RANGE[0],
                                  "max": recipes.END_INDEX_RANGE[1], "tooltip": (
                "custom: k, the schedule stops at the timestep of base sigma k (1 to base_steps - 1); "
                "larger k stops at a lower sigma.")}),
            "time_rho": ("FLOAT", {"default": c.time_rho, "min": recipes.TIME_RHO_RANGE[0],
                                   "max": recipes.TIME_RHO_RANGE[1], "step": 0.05,
                                   "tooltip": "custom: exponent of the Karras spacing in timestep space "
                                              "(paper: 1.2)."}),
        }, "optional": {
            "params": ("STRING", {"default": "", "multiline": False, "tooltip": (
                "custom: a schedule as text, e.g. the output of Few-Step Schedule Tuner "
                "('fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2 ...'). When not "
                "empty it replaces the custom parameters above. Named recipes ignore it.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params=""):
        # params is None when linked (e.g. from the tuner): CURRENT passes None for a link, PINNED leaves it out
        custom = ScheduleParams(steps, base_steps, base_rho, end_index, time_rho)
        return plan_problem(recipe, denoise, params, custom) or True

    def run(self, model, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params=""):
        """What ComfyUI calls: the SIGMAS of ``get_sigmas``, and in ``ui`` the schedule they are (on the model's own
        axis) for the graph on the node (js/fewstep_sigmas.js draws it after the run)."""
        table = ModelTable(model)
        plan = _model_plan(table, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params)
        return {"ui": schedule_ui(plan, table(), table.axis()), "result": (plan.sigmas,)}

    def get_sigmas(self, model, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params=""):
        """The N+1 sigmas on the model's own noise schedule, as a one-output tuple."""
        plan = _model_plan(ModelTable(model), recipe, denoise, steps, base_steps, base_rho, end_index, time_rho,
                           params)
        return (plan.sigmas,)


def _model_plan(table: ModelTable, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params) -> Plan:
    """The node's plan on the model's table; a bad input raises the node's message."""
    try:
        return sigmas_plan(recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params, table)
    except PlanError as error:
        raise ValueError(f"Few-Step Sigmas: {error}") from None


def sigmas_plan(recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params="",
                sigma_table=None) -> Plan:
    """The plan of Few-Step Sigmas' inputs (on ``sigma_table``, see ``make_plan``; the standard table serves
    the schedule route, for the graph on the node)."""
    custom = ScheduleParams(steps, base_steps, base_rho, end_index, time_rho)
    return make_plan(recipe, denoise, params or "", custom, sigma_table=sigma_table)
