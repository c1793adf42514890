"""Everything that touches ComfyUI's globals or differs between ComfyUI versions.

PINNED (March 2024) and CURRENT (v0.3.64+) differ in how schedulers are registered, how a model's
``model_sampling`` is looked up and whether model patches see the schedule. This module is the only
place that knows; registration here is idempotent, in place and leaves other packs' names alone.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

import comfy.k_diffusion.sampling as k_diffusion_sampling
import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..fewstep.recipes import recipe_for_step_count
from ..fewstep.schedule import TRAINING_TIMESTEPS, recipe_sigmas, schedule_problem
from ..fewstep.solvers import FINISH_LAST_SIGMA, SOLVERS, sample_solver
from ..fewstep.unipc import sample_unipc

log = logging.getLogger("ComfyUI-FewStep")

# KSampler's sampler names -> solver (solvers.SCHEDULE_SOLVERS). fewstep_unipc is UniPC as the SD1.5 UniPC
# recipes run it (noise form, bh1, order auto, no analytical first step: KSampler's schedulers do not plan for it).
SAMPLER_NAMES = {"fewstep_dpmpp_1s": "dpmpp_1s", "fewstep_dpmpp_2m": "dpmpp_2m", "fewstep_unipc": "unipc"}
SCHEDULER_NAME = "fewstep"
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


def sampler_label(solver: str) -> str:
    """How the node and the KSampler name of ``solver`` read in messages."""
    if solver in SOLVERS:
        return f"Few-Step DPM++ Sampler ({solver}; on KSampler: fewstep_{solver})"
    return "Few-Step UniPC Sampler (on KSampler: fewstep_unipc)"


def sample_with_schedule(model, x, sigmas, extra_args=None, callback=None, disable=None,
                         solver="dpmpp_1s", finish=FINISH_LAST_SIGMA, sigma_table=None, **unipc_options):
    """Run a few-step solver with the schedule visible to model patches (PINNED does not pass it).

    ``solver`` is one of solvers.SCHEDULE_SOLVERS; ``unipc_options`` (order, variant, afs, prediction of
    ``unipc.sample_unipc``), when given, run UniPC with them (Few-Step UniPC Sampler). ``sigma_table`` places
    the AFS midpoint; by default it is the sampled model's own. A SIGMAS input that cannot be sampled (not
    strictly descending, a step below 0.01 %, not finite; a trailing 0 is fine) stops here with a message,
    before any model evaluation.
    """
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(
            f"{sampler_label('unipc' if unipc_options else solver)}: the SIGMAS input cannot be sampled: "
            f"{problem}. Connect a schedule that descends strictly (Few-Step Sigmas, or a core scheduler; a last "
            "sigma of 0 is fine).")
    extra_args = dict(extra_args or {})
    model_options = dict(extra_args.get("model_options") or {})  # never mutate the patcher's own dict
    transformer_options = dict(model_options.get("transformer_options") or {})
    transformer_options[SCHEDULE_KEY] = sigmas
    model_options["transformer_options"] = transformer_options
    extra_args["model_options"] = model_options
    afs = unipc_options.get("afs", False) if unipc_options else solver == "unipc_afs"
    if afs and sigma_table is None:
        sigma_table = sampling_sigma_table(model)
    if unipc_options:
        table = {} if sigma_table is None else {"sigma_table": sigma_table}
        return sample_unipc(model, x, sigmas, extra_args, callback, disable, finish=finish, **unipc_options, **table)
    return sample_solver(model, x, sigmas, extra_args, callback, disable, solver=solver, finish=finish,
                         sigma_table=sigma_table)


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
    """The ``fewstep`` KSampler scheduler: the recipe family chosen by step count (see recipes.py)."""
    sigmas = recipe_sigmas(recipe_for_step_count(steps), discrete_sigma_table(model_sampling))
    problem = schedule_problem(sigmas)
    if problem:  # only at absurd counts: KSampler asks for steps / denoise steps (e.g. 10000 / 0.01)
        raise ValueError(f"fewstep scheduler: {steps} steps (KSampler's steps / denoise) give a schedule that cannot "
                         f"be sampled: {problem}. Use fewer steps or a larger denoise.")
    return sigmas


def _append_once(lists, name: str) -> None:
    """Append ``name`` in place to each distinct list object that lacks it."""
    seen = set()
    for names in lists:
        if names is None or id(names) in seen:
            continue
        seen.add(id(names))
        if name not in names:
            names.append(name)


def _register_pinned_scheduler() -> None:
    """PINNED has a fixed if/elif: wrap the module function once (callers look it up at call time)."""
    if getattr(comfy.samplers, "_fewstep_scheduler_wrapped", False):
        return
    original = comfy.samplers.calculate_sigmas_scheduler

    def calculate_sigmas_scheduler(model, scheduler_name, steps):
        if scheduler_name == SCHEDULER_NAME:
            return fewstep_scheduler(model.model_sampling, steps)
        return original(model, scheduler_name, steps)

    comfy.samplers.calculate_sigmas_scheduler = calculate_sigmas_scheduler
    comfy.samplers._fewstep_scheduler_wrapped = True


def _register_routes() -> None:
    """Serve the schedule preview (nodes/routes.py) from a running ComfyUI server, once.

    Both versions read ``PromptServer.instance.routes`` after loading custom nodes (CURRENT serves
    them under /api/ as well). Without a running server (the tests load the pack in process) there
    is nothing to do: a server exists only once main.py has imported ``server``, so it is not imported.
    """
    prompt_server = getattr(sys.modules.get("server"), "PromptServer", None)
    instance = getattr(prompt_server, "instance", None)
    if instance is None:
        return
    from .routes import SCHEDULE_PATH, get_schedule  # routes -> sigmas -> this module: import late
    routes = instance.routes
    if any(getattr(route, "path", None) == SCHEDULE_PATH for route in routes):
        return
    routes.get(SCHEDULE_PATH)(get_schedule)
    log.debug("serving %s", SCHEDULE_PATH)


def register() -> None:
    """Add our sampler and scheduler names to KSampler's dropdowns and the schedule route; idempotent."""
    samplers = comfy.samplers
    ksampler_class = getattr(samplers, "KSampler", None)
    for name, solver in SAMPLER_NAMES.items():
        setattr(k_diffusion_sampling, "sample_" + name, partial(sample_with_schedule, solver=solver))
        _append_once((getattr(samplers, "KSAMPLER_NAMES", None), samplers.SAMPLER_NAMES,
                      getattr(ksampler_class, "SAMPLERS", None)), name)

    handlers = getattr(samplers, "SCHEDULER_HANDLERS", None)
    if handlers is not None:  # CURRENT
        if SCHEDULER_NAME not in handlers:
            handlers[SCHEDULER_NAME] = samplers.SchedulerHandler(fewstep_scheduler)
    else:  # PINNED
        _register_pinned_scheduler()
    _append_once((samplers.SCHEDULER_NAMES, getattr(ksampler_class, "SCHEDULERS", None)), SCHEDULER_NAME)
    log.debug("registered samplers %s and scheduler %s", list(SAMPLER_NAMES), SCHEDULER_NAME)
    _register_routes()
