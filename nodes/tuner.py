"""Few-Step Schedule Tuner: search the best few-step schedule for the connected model and step budget."""

from __future__ import annotations

from ..fewstep.tuner import AUTO, REFERENCE_STEPS, SOLVER_CHOICES
from ..fewstep.tuner_learn import LEARN_CHOICES, LEARN_REFERENCE_STEPS, LEARN_SCHEDULE
from .tuning import LEARN_SHARE, MAX_CANDIDATES, MEASURE_SIZE, tune_on_model

NFE_RANGE = (2, 50)
PROBE_RANGE = (1, 128)
TIME_BUDGET_RANGE = (1.0, 3600.0)
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class FewStepScheduleTuner:
    DESCRIPTION = (
        "Searches the schedule of `nfe` model evaluations that brings the chosen solver closest to a "
        "40-step DPM++2M reference of the same model, prompt and noise, starting from the paper's recipe "
        "(end point, time_rho, then the position of every step). It also chooses whether the schedule stops "
        "early (the paper's end) or takes its last step to sigma 0, and with solver `auto` the solver and its "
        "options. Runs the connected model (LoRAs and patches included) for up to `time_budget` seconds or "
        f"{MAX_CANDIDATES} candidate schedules and returns the best schedule found; with a `vae` the distances are "
        "measured on decoded images. With `learn` it then also fits the solver's weights (and the time the network "
        "is told) per step, and keeps them only if they are better on as many noises not used for tuning. The "
        "reference is reused for another solver or nfe on the same inputs; the same inputs return the cached result "
        "at once. Paste `params` into Few-Step KSampler (recipe `custom`), which samples exactly what was tuned, or "
        "into Few-Step Sigmas' `params`.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS", "STRING")
    RETURN_NAMES = ("sigmas", "params")
    OUTPUT_TOOLTIPS = (
        "nfe+1 sigmas, descending: the last one above zero, or 0 when ending at 0 was better.",
        "The schedule, its solver and its end as text for Few-Step KSampler or Few-Step Sigmas (recipe 'custom', "
        "input `params`).")
    FUNCTION = "tune"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to tune for (with its LoRAs and patches)."}),
            "positive": ("CONDITIONING", {"tooltip": "A typical prompt for this model."}),
            "negative": ("CONDITIONING",),
            "cfg": ("FLOAT", {"default": 5.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Guidance scale you will sample with (paper: 5.5 or 7.5)."}),
            "latent_image": ("LATENT", {"tooltip": (
                "Only its size is used: the tuning resolution. Smaller is faster; the schedule carries over "
                "to larger sizes reasonably but is best at the size it was tuned at.")}),
            "nfe": ("INT", {"default": 5, "min": NFE_RANGE[0], "max": NFE_RANGE[1],
                            "tooltip": "The budget N: model evaluations of the schedule (N+1 sigmas)."}),
            "solver": (list(SOLVER_CHOICES), {"default": AUTO, "tooltip": (
                "auto: try DPM++1S, DPM++2M and UniPC (bh1 / bh2, with and without the analytical first step, "
                "order auto / 2) on the starting schedule, then tune for the best, within the same candidates; "
                "`params` names the one chosen. Or the solver you will sample with: Few-Step DPM++ Sampler's "
                "`solver`, or unipc / unipc_afs for Few-Step UniPC Sampler (order auto, bh1, noise form) with afs "
                "off / on.")}),
            "probe_seeds": ("INT", {"default": 4, "min": PROBE_RANGE[0], "max": PROBE_RANGE[1], "tooltip": (
                "How many noise samples the schedule is tuned on (one batch; with learn, as many more to check "
                "the fit). More: less overfitting to particular images, slower, and more memory: every probe is "
                "a latent of latent_image's size in the same batch.")}),
            "tuning_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": (
                "Seed of the probe noises. Kept fixed (no randomize control): a new seed means a new search.")}),
            "time_budget": ("FLOAT", {"default": 120.0, "min": TIME_BUDGET_RANGE[0], "max": TIME_BUDGET_RANGE[1],
                                      "step": 1.0, "tooltip": (
                "Seconds the search may take, reference included; it returns the best schedule so far when "
                f"time is up (or earlier when it has converged). The {REFERENCE_STEPS}-step reference and the starting "
                "schedule always run in full, so a budget shorter than they take is exceeded.")}),
        }, "optional": {
            "vae": ("VAE", {"tooltip": (
                f"Optional: measure the distances on decoded images (area-averaged to at most {MEASURE_SIZE}x"
                f"{MEASURE_SIZE}) instead of latents: what you see, and what the paper's early stop is judged by. "
                "Costs one decode of the probes per candidate.")}),
            "learn": (list(LEARN_CHOICES), {"default": LEARN_SCHEDULE, "tooltip": (
                "schedule: tune the schedule (and solver, end) only. schedule+weights: then fit, from that schedule, "
                "the DPM++ solver's weights on each step's current and two earlier predictions; +model time: also "
                f"the time the network is told at each step. Uses {round(100 * LEARN_SHARE)} % of the time budget for "
                f"the schedule, the rest for the fit (which first solves a finer {LEARN_REFERENCE_STEPS}-step "
                "reference on the probes and on probe_seeds more noises); judged on those noises, not used for "
                "tuning, and the schedule alone is returned (with the reason in the console) if the learned numbers "
                "are not better there. `params` then carries weights= and model_time=, which Few-Step KSampler "
                "reproduces.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg, nfe, solver, probe_seeds, tuning_seed, time_budget, learn=LEARN_SCHEDULE):
        return _check(cfg, nfe, solver, probe_seeds, tuning_seed, time_budget, learn) or True

    def tune(self, model, positive, negative, cfg, latent_image, nfe, solver, probe_seeds, tuning_seed, time_budget,
             vae=None, learn=LEARN_SCHEDULE):
        message = _check(cfg, nfe, solver, probe_seeds, tuning_seed, time_budget, learn)
        if message is None:
            samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
            if samples is None or samples.dim() != 4:
                shape = None if samples is None else tuple(samples.shape)
                message = f"latent_image must be an image latent (batch, channels, height, width); got shape {shape}"
            elif vae is not None:
                message = _vae_problem(vae, samples.shape[1])
        if message:
            raise ValueError(f"Few-Step Schedule Tuner: {message}")
        tuned = tune_on_model(model, positive, negative, cfg, samples, nfe, solver, probe_seeds, tuning_seed,
                              time_budget, vae, learn)
        return (tuned.sigmas.clone(), tuned.text)


def _check(cfg, nfe, solver, probe_seeds, tuning_seed, time_budget, learn=LEARN_SCHEDULE) -> str | None:
    """Message for a bad input (named, with its allowed range), or None."""
    checks = (("nfe", nfe, *NFE_RANGE), ("probe_seeds", probe_seeds, *PROBE_RANGE),
              ("time_budget", time_budget, *TIME_BUDGET_RANGE), ("tuning_seed", tuning_seed, 0, SEED_MAX),
              ("cfg", cfg, 0.0, 100.0))
    for name, value, low, high in checks:
        if not (low <= value <= high):
            return f"{name} = {value} is out of range: allowed {low} to {high}"
    if solver not in SOLVER_CHOICES:
        return f"solver = {solver!r} is not one of {list(SOLVER_CHOICES)}"
    if learn not in LEARN_CHOICES:
        return f"learn = {learn!r} is not one of {list(LEARN_CHOICES)}"
    return None


def _vae_problem(vae, latent_channels: int) -> str | None:
    """Message when ``vae`` cannot decode latents of ``latent_channels`` channels (another model family), or None."""
    if not callable(getattr(vae, "decode", None)):
        return f"vae must be a VAE (VAE Loader, Load Checkpoint's VAE); got {type(vae).__name__}"
    channels = getattr(vae, "latent_channels", None)
    if channels is not None and int(channels) != int(latent_channels):
        return (f"vae decodes latents of {channels} channels, but latent_image has {latent_channels}: connect the "
                "VAE of the model being tuned (or leave vae unconnected to measure on latents)")
    return None
