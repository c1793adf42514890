"""Everything that touches ComfyUI's globals or differs between ComfyUI versions.

PINNED (March 2024) and CURRENT (v0.3.64+) differ in how a model's ``model_sampling`` is looked up, whether
model patches see the schedule and how a sampler runs inside ComfyUI's guided sampling. This module and
``registration.py`` (the dropdown names and the route) are the only places that know.
"""

from __future__ import annotations

from dataclasses import replace

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..fewstep.learned import Preconditioning, active
from ..fewstep.noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS
from ..fewstep.plan import PlanError, Solver, steps_plan
from ..fewstep.sampling import sample
from ..fewstep.schedule import TRAINING_TIMESTEPS, flow_shift, schedule_problem
from ..fewstep.solver_names import FINISH_DENOISED
from .schedule_graph import AXIS_CONTINUOUS, AXIS_FLOW, AXIS_SD

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
    that are not discrete SD-family ones (``model_sigma_table`` serves every kind the pack samples).

    A full table (eps, v-prediction, zero-terminal SNR) is the model's own ``sigmas``. A shorter one
    (``lcm`` sampling: 50 sigmas at t = 19, 39, ..., 999) is read through the model's own
    ``sigma(timestep)``, which interpolates between its timesteps and clamps below the first one, so
    the schedule's timesteps mean the same on every discrete SD-family model.
    """
    ms = comfy.model_sampling
    excluded = tuple(getattr(ms, name) for name in ("CONST", "EDM", "StableCascadeSampling",
                                                    "ModelSamplingDiscreteEDM") if hasattr(ms, name))
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete) or isinstance(model_sampling, excluded):
        raise ValueError(
            "Few-Step schedules are built on the discrete 1000-step noise schedule of SD1.x / SD2.x / SDXL "
            f"(eps or v-prediction) models; this model uses {_sampling_kind(model_sampling)} (flow-matching or "
            "continuous models such as SD3, Flux or Stable Cascade are not supported).")
    return _discrete_table(model_sampling)


def _discrete_table(model_sampling) -> torch.Tensor:
    """A discrete model's sigma at timesteps 0..999 (its own table, or its sigma(t) for a shorter one), float64."""
    sigmas = model_sampling.sigmas.detach()
    if len(sigmas) != TRAINING_TIMESTEPS:
        timesteps = torch.arange(TRAINING_TIMESTEPS, dtype=torch.float32, device=sigmas.device)
        sigmas = model_sampling.sigma(timesteps)
    return sigmas.to("cpu", torch.float64)


def _sampling_kind(model_sampling) -> str:
    """How messages name a model sampling: its classes (ComfyUI's ModelSamplingAdvanced(sigma object, kind))."""
    return ", ".join(base.__name__ for base in type(model_sampling).__bases__) or type(model_sampling).__name__


def noise_form_of(model_sampling) -> str:
    """``eps`` or ``const`` (fewstep/noise_forms.py), read off what the model's own ``noise_scaling`` and
    ``inverse_noise_scaling`` do.

    eps: x = x0 + sigma eps, returned as is (EPS, V_PREDICTION, EDM, X0, LCM, COSMOS_RFLOW ...). const:
    x = (1 - sigma) x0 + sigma eps, returned divided by 1 - sigma, on a CONST model (flow matching). Newer
    ComfyUI's image-to-image flow kinds (IMG_TO_IMG_FLOW, IMG_TO_IMG_VELOCITY) subclass CONST but return the
    latent unmixed: refused (PlanError, input ``model``). Probing the two functions, not the class names, keeps
    this right for classes a ComfyUI version or another pack adds.
    """
    const_class = getattr(comfy.model_sampling, "CONST", None)  # PINNED (March 2024) has no flow models
    mixes = []
    for value in (0.25, 0.5):
        sigma = torch.tensor(value, dtype=torch.float64)
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        try:
            noise_part = float(model_sampling.noise_scaling(sigma, one.clone(), zero.clone()))
            latent_part = float(model_sampling.noise_scaling(sigma, zero.clone(), one.clone()))
            inverse = float(model_sampling.inverse_noise_scaling(sigma, one.clone()))
        except (AttributeError, RuntimeError, TypeError, ValueError):  # another shape of model sampling: refused below
            mixes = None
            break
        mixes.append((value, noise_part, latent_part, inverse))

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))

    if mixes:
        if all(close(n, s) and close(lat, 1.0) and close(inv, 1.0) for s, n, lat, inv in mixes) and not (
                const_class is not None and isinstance(model_sampling, const_class)):
            return NOISE_FORM_EPS
        scale = mixes[0][1] / mixes[0][0]  # newer CONST may scale the noise (noise_scale): still this form
        if (const_class is not None and isinstance(model_sampling, const_class) and scale > 0.0
                and all(close(n, scale * s) and close(lat, 1.0 - s) and close(inv, 1.0 / (1.0 - s))
                        for s, n, lat, inv in mixes)):
            return NOISE_FORM_CONST
    raise PlanError(
        f"model: its sampling ({_sampling_kind(model_sampling)}) mixes noise into the latent neither as x0 + sigma * "
        "noise (SD1.x, SDXL, v-prediction, EDM) nor as (1 - sigma) * x0 + sigma * noise (flow matching: SD3, Flux, "
        "...); an image-to-image model, say. Use ComfyUI's own samplers and schedulers for it.", "model")


def model_sigma_table(model_sampling) -> tuple[torch.Tensor, str]:
    """(the model's sigma at each of the 1000 training timesteps, float64 ascending; its noise form).

    Discrete SD-family models: their own table (``discrete_sigma_table``), ``eps``. Flow models (ModelSampling
    DiscreteFlow, ModelSamplingFlux: ``const``) and continuous ones (ModelSamplingContinuousEDM / V: ``eps``):
    entry i is the model's sigma at the unshifted time t = (i + 1) / 1000, ``percent_to_sigma(1 - t)``, i.e.
    through the model's own sigma(t) with its shift, so a shift node (ModelSamplingSD3 / AuraFlow / Flux) moves
    the schedule as it moves core schedulers; the last entry is sigma(1) = sigma_max (1 for flow).
    docs/noise_forms.md, "The schedule on each model's time axis". PlanError (input ``model``) naming the kind for
    the rest.
    """
    ms = comfy.model_sampling
    noise_form = noise_form_of(model_sampling)
    unsupported = tuple(getattr(ms, name) for name in ("StableCascadeSampling", "ModelSamplingDiscreteEDM")
                        if hasattr(ms, name))
    if isinstance(model_sampling, unsupported) or not hasattr(model_sampling, "percent_to_sigma"):
        raise PlanError(
            f"model: no Few-Step schedule fits its sampling ({_sampling_kind(model_sampling)}; Stable Cascade's sigma "
            "table is flat at both ends, where its alphas_cumprod is clamped). The pack serves SD1.x / SD2.x / SDXL, "
            "flow models (SD3, Flux, AuraFlow, ...) and continuous EDM / v models; use ComfyUI's own schedulers "
            "(karras, simple) for this one.", "model")
    if isinstance(model_sampling, ms.ModelSamplingDiscrete):
        table = _discrete_table(model_sampling)
    else:
        # percent 0 (t = 1) is sigma_max: continuous models answer it with a sentinel (999999999.9), not their sigma
        times = [(i + 1) / TRAINING_TIMESTEPS for i in range(TRAINING_TIMESTEPS - 1)]
        table = torch.tensor([*(float(model_sampling.percent_to_sigma(1.0 - t)) for t in times),
                              float(model_sampling.sigma_max)], dtype=torch.float64)
    problem = _table_problem(table, noise_form, strict=not isinstance(model_sampling, ms.ModelSamplingDiscrete))
    if problem:
        raise PlanError(f"model: no Few-Step schedule fits its sampling ({_sampling_kind(model_sampling)}): "
                        f"{problem}. Use ComfyUI's own schedulers for it.", "model")
    return table, noise_form


def model_axis(model_sampling, table: torch.Tensor, noise_form: str) -> dict:
    """The time axis a model's schedule is read on (``model_sigma_table``'s ``table`` and ``noise_form``), as the
    graph on the nodes names it: ``{"kind": "sd"}`` (a discrete SD-family table: SD1.x, SD2.x, SDXL, v, zsnr),
    ``{"kind": "flow", "shift": s}`` (SD3's s, Flux's e^mu; s is None for a flow table of another form) or
    ``{"kind": "continuous", "sigma_min", "sigma_max"}`` (EDM / V: log-linear in t; 6 significant digits, as the
    float32 settings were typed)."""
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete):
        return {"kind": AXIS_SD}
    if noise_form == NOISE_FORM_CONST:
        return {"kind": AXIS_FLOW, "shift": flow_shift(table)}
    low, high = getattr(model_sampling, "sigma_min", table[0]), getattr(model_sampling, "sigma_max", table[-1])
    return {"kind": AXIS_CONTINUOUS, "sigma_min": float(f"{float(low):.6g}"), "sigma_max": float(f"{float(high):.6g}")}


class ModelTable:
    """A model's sigma table (``model_sigma_table``), read when first called (``make_plan``'s ``sigma_table``: only
    once the inputs are valid), and the axis it puts the schedule on (``model_axis``)."""

    def __init__(self, model):
        self.model = model
        self.table = None

    def __call__(self) -> torch.Tensor:
        if self.table is None:
            self.model_sampling = model_sampling_of(self.model)
            self.table, self.noise_form = model_sigma_table(self.model_sampling)
        return self.table

    def axis(self) -> dict:
        table = self()
        return model_axis(self.model_sampling, table, self.noise_form)


def _table_problem(table: torch.Tensor, noise_form: str, strict: bool) -> str | None:
    """Why a sigma table cannot carry the schedule, or None: at most 1 in the const form and, when ``strict`` (not
    a discrete SD-family table, taken as it always was: lcm's repeats its first sigma), finite, positive and
    strictly ascending (the timestep of a sigma is read back from it)."""
    if noise_form == NOISE_FORM_CONST and float(table[-1]) > 1.0:
        return f"its largest sigma is {float(table[-1]):g}, above 1, in the flow form (1 - sigma) x0 + sigma noise"
    if not strict:
        return None
    if not bool(torch.isfinite(table).all()) or float(table.min()) <= 0.0:
        return "its sigmas are not all finite and above 0"
    if not bool((table[1:] > table[:-1]).all()):
        return "its sigmas do not increase strictly with the timestep"
    return None


def unet_model_channels(model) -> int | None:
    """model_channels of a UNet model; None for a model without a UNet decoder (a DiT: SD3, Flux, Wan, ...)."""
    unet_config = getattr(model.model.model_config, "unet_config", {}) or {}
    if "model_channels" not in unet_config or not hasattr(model.model.diffusion_model, "output_blocks"):
        return None
    return int(unet_config["model_channels"])


def schedule_of(transformer_options: dict) -> list[float] | None:
    """The sampling schedule passed to model patches, if the sampler passed one."""
    schedule = transformer_options.get(SCHEDULE_KEY)
    return None if schedule is None else torch.as_tensor(schedule).tolist()  # one device sync, not one per sigma


def sampled_model_sampling(model) -> object | None:
    """The (patched) model_sampling of the model a k-diffusion sampler function is given: ComfyUI's
    KSamplerX0Inpaint around the guider around the BaseModel, in both versions; None for any other callable
    (the tuner's denoiser, a benchmark's analytic model)."""
    base_model = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return getattr(base_model, "model_sampling", None)


def sampling_sigma_table(model) -> torch.Tensor:
    """The sigma table (``model_sigma_table``) of the model a k-diffusion sampler function is given."""
    model_sampling = sampled_model_sampling(model)
    if model_sampling is None:
        raise ValueError("the analytical first step needs the model's noise schedule, and this sampler was not "
                         "given a ComfyUI model (use it in SamplerCustom, SamplerCustomAdvanced or KSampler)")
    return model_sigma_table(model_sampling)[0]


def preconditioning_of(model_sampling) -> Preconditioning:
    """c_in, c_skip and c_out of a model_sampling (``learned.Preconditioning``), read through its own
    calculate_input and calculate_denoised (affine in the network output for every kind: eps, v, zsnr, EDM, CONST),
    so a model time is realised exactly as ComfyUI forms the input and the output."""
    def scalar(sigma: float) -> torch.Tensor:
        return torch.tensor([sigma], dtype=torch.float64)

    one, zero = torch.ones((1, 1), dtype=torch.float64), torch.zeros((1, 1), dtype=torch.float64)
    return Preconditioning(
        lambda s: float(model_sampling.calculate_input(scalar(s), one)),
        lambda s: float(model_sampling.calculate_denoised(scalar(s), zero, one)),
        lambda s: float(model_sampling.calculate_denoised(scalar(s), one, zero)))


def sampling_preconditioning(model) -> Preconditioning:
    """``preconditioning_of`` the model a k-diffusion sampler function is given (as ``sampling_sigma_table``)."""
    base_model = getattr(getattr(model, "inner_model", None), "inner_model", None)
    if base_model is None or not hasattr(base_model, "model_sampling"):
        raise ValueError("a model_time needs the model's model_sampling, and this sampler was not given a ComfyUI "
                         "model (use it in SamplerCustom, SamplerCustomAdvanced or KSampler)")
    return preconditioning_of(base_model.model_sampling)


def sample_with_schedule(model, x, sigmas, extra_args=None, callback=None, disable=None, solver: Solver = Solver(),
                         sigma_table=None, preconditioning=None):
    """Run a few-step ``solver`` with the schedule visible to model patches (PINNED does not pass it).

    On a ComfyUI model the solver steps in that model's noise form (``noise_form_of``: const for flow models),
    whatever the SAMPLER was built with (it is built without a model). ``sigma_table`` places the AFS midpoint;
    by default it is the sampled model's own; ``preconditioning`` realises a ``model_time`` (by default read from
    the sampled model's model_sampling). A SIGMAS input that cannot be sampled (not strictly descending, a
    step below 0.01 %, not finite; a trailing 0 is fine; above 1 on a flow model) stops here with a message,
    before any model evaluation.
    """
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(
            f"{solver.label}: the SIGMAS input cannot be sampled: {problem}. Connect a schedule that descends "
            "strictly (Few-Step Sigmas, or a core scheduler; a last sigma of 0 is fine).")
    model_sampling = sampled_model_sampling(model)
    if model_sampling is not None:
        solver = replace(solver, noise_form=noise_form_of(model_sampling))
        if solver.noise_form == NOISE_FORM_CONST and float(sigmas[0]) > 1.0:
            raise ValueError(
                f"{solver.label}: this is a flow-matching model (x = (1 - sigma) x0 + sigma noise, sigma at most 1), "
                f"and the SIGMAS input starts at {float(sigmas[0]):.4g}: it was made for another model. Connect "
                "Few-Step Sigmas (or a core scheduler) with this model.")
    extra_args = dict(extra_args or {})
    model_options = dict(extra_args.get("model_options") or {})  # never mutate the patcher's own dict
    transformer_options = dict(model_options.get("transformer_options") or {})
    transformer_options[SCHEDULE_KEY] = sigmas
    model_options["transformer_options"] = transformer_options
    extra_args["model_options"] = model_options
    if solver.afs and sigma_table is None:
        sigma_table = sampling_sigma_table(model)
    if active(solver.model_time) and preconditioning is None:
        preconditioning = sampling_preconditioning(model)
    result = sample(model, x, sigmas, extra_args, callback, disable, solver, sigma_table, preconditioning)
    if solver.noise_form == NOISE_FORM_CONST and solver.finish == FINISH_DENOISED and model_sampling is not None:
        # ComfyUI divides what a sampler returns on a flow model by 1 - sigma_last (inverse_noise_scaling, meant for
        # the latent x there): undo it for a data prediction, so finish = denoised hands out D itself
        result = result * (1.0 - float(sigmas[-1]))
    return result


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


def scheduler_family(model_sampling, noise_form: str) -> str:
    """The ``fewstep`` scheduler's recipe family for a model (``recipes.SCHEDULER_FAMILIES``): ``flux`` for
    ModelSamplingFlux, ``sd3`` for the other flow models (DiscreteFlow: SD3 / SD3.5, AuraFlow, Wan ...), ``sd``
    for the rest (SD1.x, SDXL, v, EDM)."""
    flux = getattr(comfy.model_sampling, "ModelSamplingFlux", None)  # PINNED (March 2024) has no Flux
    if flux is not None and isinstance(model_sampling, flux):
        return "flux"
    return "sd3" if noise_form == NOISE_FORM_CONST else "sd"


def fewstep_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """The ``fewstep`` KSampler scheduler: the recipe family of the model's kind, chosen by step count
    (``plan.steps_plan``)."""
    table, noise_form = model_sigma_table(model_sampling)
    try:
        return steps_plan(steps, table, scheduler_family(model_sampling, noise_form)).sigmas
    except PlanError as error:  # only at absurd counts: KSampler asks for steps / denoise steps (e.g. 10000 / 0.01)
        raise ValueError(f"fewstep scheduler: {steps} steps (KSampler's steps / denoise) give a schedule that cannot "
                         f"be sampled: {error}. Use fewer steps or a larger denoise.") from None
