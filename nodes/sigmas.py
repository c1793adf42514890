"""Few-Step Sigmas: the paper's early-stopping schedule for the connected model."""

from __future__ import annotations

from ..fewstep import recipes
from ..fewstep.params import ParamsError, ScheduleParams, parse_params
from ..fewstep.recipes import CUSTOM, DEFAULT_CUSTOM, RECIPE_CHOICES, RECIPES
from ..fewstep.schedule import STANDARD_TABLE, fewstep_timesteps, schedule_problem
from .comfy_api import discrete_sigma_table, model_sampling_of


class FewStepSigmas:
    DESCRIPTION = (
        "The early-stopping schedule of 'Hyperparameters are all you need' (arXiv 2510.02390): N+1 sigmas "
        "spaced in timestep space, ending at a small non-zero sigma, so N model evaluations. Use with "
        "Few-Step DPM++ Sampler in SamplerCustom. Named recipes reproduce the paper; 'custom' uses the "
        "parameters below. Values whose schedule would repeat a sigma (a step below 0.01 %) are refused.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("N+1 sigmas, descending, the last one above zero (no zero appended).",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        c = DEFAULT_CUSTOM
        return {"required": {
            "model": ("MODEL", {"tooltip": (
                "The schedule's timesteps (those of the standard SD1.x / SDXL schedule) are read on this model's "
                "own discrete noise schedule: v-prediction and zero-terminal-SNR models start at their own first "
                "sigma and stop at the recipe's timestep.")}),
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
        if params is None:  # linked (e.g. from the tuner): CURRENT passes None for a link, PINNED leaves it out
            if recipe == CUSTOM:  # the schedule is known only when the node runs, which checks it then
                low, high = recipes.DENOISE_RANGE
                if low <= denoise <= high:
                    return True
                return f"denoise = {denoise} is out of range: allowed {low} to {high}"
            params = ""
        return _check(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params) or True

    def get_sigmas(self, model, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params=""):
        message = _check(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params)
        if message:
            raise ValueError(f"Few-Step Sigmas: {message}")
        table = discrete_sigma_table(model_sampling_of(model))
        sigmas = schedule(table, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params)
        problem = schedule_problem(sigmas)
        if problem:  # the inputs passed on the standard table; this model's table (e.g. lcm) differs
            inputs = _inputs(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params)
            hint = _hint(_used(recipe, steps, base_steps, base_rho, end_index, time_rho, params), denoise)
            lowest = float(table[0])
            floor = (f" This model has no sigma below {lowest:.4g} (lcm sampling: no timestep below 19), so the "
                     "steps below it repeat it." if float(sigmas[-1]) <= lowest * (1 + 1e-6) else "")
            raise ValueError(f"Few-Step Sigmas: {inputs} give a schedule that cannot be sampled on this model's noise "
                             f"schedule (sigma {lowest:.4g} to {float(table[-1]):.4g}): {problem}.{floor} {hint}")
        return (sigmas,)


def schedule(sigma_table, recipe, denoise, steps, base_steps, base_rho, end_index, time_rho, params=""):
    """The node's sigmas on ``sigma_table`` for checked inputs (also served to the graph on the node)."""
    return _used(recipe, steps, base_steps, base_rho, end_index, time_rho, params).sigmas(sigma_table, denoise)


def _used(recipe, steps, base_steps, base_rho, end_index, time_rho, params="") -> ScheduleParams:
    """The schedule parameters in force: a named recipe's own, a params string's, or the custom widgets'."""
    if recipe != CUSTOM:
        return ScheduleParams.from_recipe(RECIPES[recipe])
    if params.strip():
        return parse_params(params)
    return ScheduleParams(steps, base_steps, base_rho, end_index, time_rho)


def _check(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params="") -> str | None:
    """Message for a bad input (named, with its allowed range) or for inputs whose schedule cannot be
    sampled (on the standard SD1.x / SDXL table, see ``schedule_problem``), or None."""
    if recipe not in RECIPE_CHOICES:
        return f"recipe = {recipe!r} is not one of {RECIPE_CHOICES}"
    try:
        p = _used(recipe, steps, base_steps, base_rho, end_index, time_rho, params)
    except ParamsError as error:
        return str(error)
    message = recipes.check_custom_parameters(p.steps, p.base_steps, p.base_rho, p.end_index, p.time_rho, denoise)
    if message:  # checked with denoise all the same
        return message
    problem = schedule_problem(p.sigmas(STANDARD_TABLE, denoise))
    if problem:
        return (f"{_inputs(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params)} give a schedule "
                f"that cannot be sampled: {problem}. {_hint(p, denoise)}")
    return None


def _inputs(recipe, steps, base_steps, base_rho, end_index, time_rho, denoise, params="") -> str:
    """The inputs a schedule came from, named as on the node."""
    if recipe != CUSTOM:
        return f"recipe = {recipe!r} and denoise = {denoise}"
    if params.strip():
        return f"params = {params.strip()!r} and denoise = {denoise}"
    return (f"steps = {steps}, base_steps = {base_steps}, base_rho = {base_rho}, end_index = {end_index}, "
            f"time_rho = {time_rho} and denoise = {denoise}")


def _hint(p: ScheduleParams, denoise: float) -> str:
    """Where the schedule's steps run in timestep space, and which inputs widen or even them out."""
    timesteps = fewstep_timesteps(p.steps, p.base_steps, p.base_rho, p.end_index, p.time_rho, denoise, p.ramp)
    return (f"Its {p.steps} steps run from timestep {round(float(timesteps[0]), 3):g} down to "
            f"{round(float(timesteps[-1]), 3):g} "
            f"(time_rho = {p.time_rho}): use fewer steps, a time_rho nearer 1, a longer span (a larger denoise; an "
            "end further from 999: a larger end_index or base_rho; an end above 0: end_index below base_steps - 1)"
            + (", or ramp values further apart" if p.ramp else "") + ".")
