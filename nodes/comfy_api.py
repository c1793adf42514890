"""Everything that touches ComfyUI's globals or differs between ComfyUI versions.

PINNED (March 2024) and CURRENT (v0.3.64+) differ in how a model's ``model_sampling`` is looked up, whether
model patches see the schedule and how a sampler runs inside ComfyUI's guided sampling. This module and
``registration.py`` (the dropdown names and the route) are the only places that know.
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..fewstep.plan import PlanError, Solver, steps_plan
from ..fewstep.sampling import sample
from ..fewstep.schedule import TRAINING_TIMESTEPS, schedule_problem

SCHEDULE_KEY = "sample_sigmas"  # where CURRENT puts the schedule in transformer_options


def model_sampling_of(model) -> object:
    """The patched model_sampling of a ModelPatcher, in both ComfyUI versions.

    PINNED has no ``get_model_object``. While another clone of the same model is loaded, its object
    patch (a zero-terminal-SNR ModelSamplingDiscrete, say) sits on the shared ``model.model`` and the
    original waits in ``object_patches_backup``, a dict the clones share: read it from there, as
    CURRENT's ``get_model_object`` does, not the other clone's.
    """
    if hasattr(model, "get_model_object"):
        return model.get_model_object("model_sampling")
    if "model_sampling" in model.object_patches:
        return model.object_patches["model_sampling"]
    backup = getattr(model, "object_patches_backup", None) or {}
    return backup.get("model_sampling", model.model.model_sampling)


def discrete_sigma_table(model_sampling) -> torch.Tensor:
    """The model's sigma at each of the 1000 training timesteps (float64), or a clear error for models
    the schedule does not fit.

    A full table (eps, v-prediction, zero-terminal SNR) is the model's own ``sigmas``. A shorter one
    (``lcm`` sampling: 50 sigmas at t = 19, 39, ..., 999) is read through the model's own
    ``sigma(timestep)``, which interpolates between its timesteps and clamps below the first one, so
    the schedule's timesteps mean the same on every discrete SD-family model.
    """
    ms = comfy.model_sampling
    excluded = tuple(getattr(ms, name) for name in ("CONST", "EDM", "StableCascadeSampling",
                                                    "ModelSamplingDiscreteEDM") if hasattr(ms, name))
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete) or isinstance(model_sampling, excluded):
        kind = ", ".join(base.__name__ for base in type(model_sampling).__bases__) or type(model_sampling).__name__
        raise ValueError(
            "Few-Step schedules are built on the discrete 1000-step noise schedule of SD1.x / SD2.x / SDXL "
            f"(eps or v-prediction) models; this model uses {kind} (flow-matching or continuous models "
            "such as SD3, Flux or Stable Cascade are not supported).")
    sigmas = model_sampling.sigmas.detach()
    if len(sigmas) != TRAINING_TIMESTEPS:
        timesteps = torch.arange(TRAINING_TIMESTEPS, dtype=torch.float32, device=sigmas.device)
        sigmas = model_sampling.sigma(timesteps)
    return sigmas.to("cpu", torch.float64)


def unet_model_channels(model) -> int:
    """model_channels of a UNet model, or a clear error for models without a UNet decoder."""
    unet_config = getattr(model.model.model_config, "unet_config", {}) or {}
    if "model_channels" not in unet_config or not hasattr(model.model.diffusion_model, "output_blocks"):
        raise ValueError(
            f"Timed FreeU applies to UNet models only (SD1.x, SD2.x, SDXL); this model "
            f"({type(model.model).__name__}) has no UNet decoder.")
    return int(unet_config["model_channels"])


def schedule_of(transformer_options: dict) -> list[float] | None:
    """The sampling schedule passed to model patches, if the sampler passed one."""
    schedule = transformer_options.get(SCHEDULE_KEY)
    return None if schedule is None else torch.as_tensor(schedule).tolist()  # one device sync, not one per sigma


def sampling_sigma_table(model) -> torch.Tensor:
    """The sigma table of the model a k-diffusion sampler function is given (ComfyUI's KSamplerX0Inpaint
    around the guider around the BaseModel, in both versions; its model_sampling is the patched one)."""
    base_model = getattr(getattr(model, "inner_model", None), "inner_model", None)
    if base_model is None or not hasattr(base_model, "model_sampling"):
        raise ValueError("the analytical first step needs the model's noise schedule, and this sampler was not "
                         "given a ComfyUI model (use it in SamplerCustom, SamplerCustomAdvanced or KSampler)")
    return discrete_sigma_table(base_model.model_sampling)


def sample_with_schedule(model, x, sigmas, extra_args=None, callback=None, disable=None, solver: Solver = Solver(),
                         sigma_table=None):
    """Run a few-step ``solver`` with the schedule visible to model patches (PINNED does not pass it).

    ``sigma_table`` places the AFS midpoint; by default it is the sampled model's own. A SIGMAS input that
    cannot be sampled (not strictly descending, a step below 0.01 %, not finite; a trailing 0 is fine) stops
    here with a message, before any model evaluation.
    """
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(
            f"{solver.label}: the SIGMAS input cannot be sampled: {problem}. Connect a schedule that descends "
            "strictly (Few-Step Sigmas, or a core scheduler; a last sigma of 0 is fine).")
    extra_args = dict(extra_args or {})
    model_options = dict(extra_args.get("model_options") or {})  # never mutate the patcher's own dict
    transformer_options = dict(model_options.get("transformer_options") or {})
    transformer_options[SCHEDULE_KEY] = sigmas
    model_options["transformer_options"] = transformer_options
    extra_args["model_options"] = model_options
    if solver.afs and sigma_table is None:
        sigma_table = sampling_sigma_table(model)
    return sample(model, x, sigmas, extra_args, callback, disable, solver, sigma_table)


def fewstep_sampler(solver: Solver):
    """The SAMPLER that runs ``solver`` (what both sampler nodes and Few-Step KSampler hand to ComfyUI)."""
    return comfy.samplers.KSAMPLER(sample_with_schedule, extra_options={"solver": solver})


def empty_latent_for(model, latent: torch.Tensor) -> torch.Tensor:
    """An empty latent with the channel count the model wants (CURRENT resizes one; PINNED has no such step)."""
    fix = getattr(comfy.sample, "fix_empty_latent_channels", None)
    return latent if fix is None else fix(model, latent)


def sample_custom_with(model, sampler_function, noise, cfg, sigmas, positive, negative, latent, seed):
    """Run ``sampler_function`` (k-diffusion signature) through ComfyUI's own guided sampling path.

    ``comfy.sample.sample_custom`` exists in both versions: it loads the model, prepares the conds and
    applies CFG (PINNED: sampling_function; CURRENT: CFGGuider) with every patch and LoRA of ``model``.
    """
    sampler = comfy.samplers.KSAMPLER(sampler_function)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      disable_pbar=True, seed=seed)


def progress_text(text: str) -> None:
    """Show ``text`` on the running node in the frontend (CURRENT: PromptServer.send_progress_text for the
    node of the executing context). PINNED has neither, nor has a run without a server: then nothing."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    context = get_executing_context()
    if server is None or context is None or not hasattr(server, "send_progress_text"):
        return
    server.send_progress_text(text, context.node_id)


def sample_custom_outputs(model, seed: int, cfg: float, positive, negative, sampler, sigmas, latent: dict):
    """(LATENT at the last sigma, LATENT of the last denoised prediction), exactly as SamplerCustom with
    add_noise makes them in both versions: the seed's noise (batch_index aware), an empty latent resized
    to the model's channels (CURRENT), the noise mask, ComfyUI's progress bar and latent previews (whose
    hook is where the server stops a cancelled prompt, between evaluations), and ``comfy.sample.sample_custom``.
    """
    import latent_preview  # ComfyUI's top-level module: imported where it is used, as core nodes do

    latent = latent.copy()
    latent_image = empty_latent_for(model, latent["samples"])
    latent["samples"] = latent_image
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    x0_output = {}
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, x0_output)
    disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
    samples = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image,
                                         noise_mask=latent.get("noise_mask"), callback=callback,
                                         disable_pbar=disable_pbar, seed=seed)
    out = latent.copy()
    out["samples"] = samples
    if "x0" not in x0_output:
        return out, out
    denoised = latent.copy()
    denoised["samples"] = model.model.process_latent_out(x0_output["x0"].cpu())
    return out, denoised


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel (resets the flag as ComfyUI does)."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def fewstep_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """The ``fewstep`` KSampler scheduler: the recipe family chosen by step count (``plan.steps_plan``)."""
    try:
        return steps_plan(steps, discrete_sigma_table(model_sampling)).sigmas
    except PlanError as error:  # only at absurd counts: KSampler asks for steps / denoise steps (e.g. 10000 / 0.01)
        raise ValueError(f"fewstep scheduler: {steps} steps (KSampler's steps / denoise) give a schedule that cannot "
                         f"be sampled: {error}. Use fewer steps or a larger denoise.") from None
