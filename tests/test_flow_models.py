"""Flow-matching (SD3's DiscreteFlow, Flux) and continuous EDM models inside a real ComfyUI: tiny random-weight models
built from ComfyUI's own model classes and configs (no download), sampled through the pack's nodes.

SD3 and Flux exist in ComfyUI from mid-2024 on: their tests run on CURRENT (v0.3.64) and skip on PINNED. The EDM
model (ModelSamplingContinuousEDM on the tiny SD1.5 UNet) runs on both. Expected values are computed here from the
model kinds' formulas (docs/noise_forms.md, "The schedule on each model's time axis"), not read from the pack.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import build_tiny_sd15

from fewstep.noise_forms import half_log_snr, noise_form_problem
from fewstep.recipes import RECIPES, Recipe, recipe_for_step_count
from fewstep.schedule import fewstep_timesteps, schedule_problem

LATENT = (1, 16, 8, 8)  # SD3 / Flux latents have 16 channels
# Between table entries the schedule reads sigma as the paper's reference does (alphas_cumprod linear in the timestep):
# on a flow table that is within 3e-4 of the model's sigma(t) at the SD1.5 recipes' end (t = 0.019; 0.4 % at the SDXL
# recipes' t = 0.004, where entries are 25 % apart), on the EDM table within 3e-5 (docs/noise_forms.md)
FLOW_RTOL = 5e-4
FLOW_END_RTOL = 4e-3  # near t = 0.004 (the SDXL recipes' and the 8-step flow families' last steps)
SD3_SHIFT = 3.0  # ComfyUI's SD3 sampling_settings


def _patcher(model, seed: int):
    """``model`` with random weights (as conftest's tiny UNet) in a ComfyUI ModelPatcher; the network's float buffers
    (SD3's position embedding) are left uninitialised by ComfyUI's ops too, so they get small random values."""
    import comfy.model_management
    import comfy.model_patcher

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 100
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * fan_in ** -0.5)
        for buffer in model.diffusion_model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    model.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def _needs(name: str) -> None:
    from comfy import supported_models

    if not hasattr(supported_models, name):
        pytest.skip(f"PINNED (March 2024) has no {name}")


@pytest.fixture(scope="module")
def sd3(comfy):
    """SD3's MMDiT (comfy.model_base.SD3, ModelSamplingDiscreteFlow shift 3 + CONST), depth 1, width 64, patch 2."""
    _needs("SD3")
    from comfy import supported_models

    config = {"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "out_channels": 16, "depth": 1,
              "input_size": None, "adm_in_channels": 32, "num_patches": 256, "pos_embed_max_size": 16,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 32, "out_features": 64}},
              "x_block_self_attn_layers": []}
    return _patcher(supported_models.SD3(config).get_model({}), 3)


@pytest.fixture(scope="module")
def flux(comfy):
    """Flux (comfy.model_base.Flux, ModelSamplingFlux + CONST, guidance embedding), one double and one single block,
    width 64."""
    _needs("Flux")
    from comfy import supported_models

    config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
              "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
              "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
    return _patcher(supported_models.Flux(config).get_model({}), 4)


@pytest.fixture(scope="module")
def edm(comfy):
    """The tiny SD1.5 UNet as Playground v2.5 samples: core node ModelSamplingContinuousEDM, EDM prediction with
    sigma_data 0.5, sigma 0.002 to 80 (both versions)."""
    advanced = comfy.model_advanced.ModelSamplingContinuousEDM()
    return advanced.patch(build_tiny_sd15(5), "edm_playground_v2.5", 80.0, 0.002)[0]


def dit_conds(seed: int = 1):
    """(positive, negative) for SD3 / Flux: 8 tokens of width 32 and a pooled vector of 32."""
    generator = torch.Generator().manual_seed(seed)
    return tuple([[torch.randn(1, 8, 32, generator=generator),
                   {"pooled_output": torch.randn(1, 32, generator=generator)}]] for _ in range(2))


def node(comfy, node_id):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def api(comfy):
    import sys

    return sys.modules[comfy.pack.__name__ + ".nodes.comfy_api"]


def model_sampling(comfy, model):
    return api(comfy).model_sampling_of(model)


def few_step_sigmas(comfy, model, recipe="SD1.5 5-step", params=""):
    return node(comfy, "FewStepSigmas").get_sigmas(model, recipe, 1.0, 5, 8, 5.0, 6, 1.2, params)[0]


def shifted(shift: float, t):
    """DiscreteFlow's sigma(t) = shift t / (1 + (shift - 1) t)."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def flux_sigma(mu: float, t):
    """Flux's sigma(t) = e^mu / (e^mu + 1/t - 1)."""
    return math.exp(mu) / (math.exp(mu) + 1.0 / t - 1.0)


def recipe_times(recipe) -> torch.Tensor:
    """The timesteps of a recipe (or its name) as the unshifted time t = (c + 1) / 1000."""
    r = RECIPES[recipe] if isinstance(recipe, str) else recipe
    return (fewstep_timesteps(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho) + 1.0) / 1000.0


# --- the table and the schedule on each axis ----------------------------------------------------------------------

def test_table_on_the_flow_axis_follows_the_shift(comfy, sd3):
    table, form = api(comfy).model_sigma_table(model_sampling(comfy, sd3))
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000.0
    assert form == "const" and table.dtype == torch.float64 and float(table[-1]) == 1.0
    torch.testing.assert_close(table, shifted(SD3_SHIFT, t), rtol=1e-12, atol=0)
    # the model's own float32 table (what core schedulers read) is the same sigma(t)
    torch.testing.assert_close(table, model_sampling(comfy, sd3).sigmas.double(), rtol=1e-6, atol=0)
    six = comfy.model_advanced.ModelSamplingSD3().patch(sd3, 6.0)[0]
    table6, _ = api(comfy).model_sigma_table(model_sampling(comfy, six))
    torch.testing.assert_close(table6, shifted(6.0, t), rtol=1e-12, atol=0)


def test_few_step_sigmas_on_sd3_and_the_shift_node(comfy, sd3):
    """Few-Step Sigmas on SD3: the recipe's timesteps on the unshifted flow time through sigma(t), starting at
    exactly 1; ModelSamplingSD3 with shift 6 moves every step to 6t / (1 + 5t) of the same t."""
    ours = few_step_sigmas(comfy, sd3)
    t = recipe_times("SD1.5 5-step")
    torch.testing.assert_close(ours.double(), shifted(SD3_SHIFT, t), rtol=FLOW_RTOL, atol=0)
    assert float(ours[0]) == 1.0 and ours.dtype == torch.float32 and len(ours) == 6
    assert schedule_problem(ours) is None and noise_form_problem("const", ours.tolist()) is None
    six = few_step_sigmas(comfy, comfy.model_advanced.ModelSamplingSD3().patch(sd3, 6.0)[0])
    t_back = ours.double() / (SD3_SHIFT - (SD3_SHIFT - 1.0) * ours.double())  # invert shift 3 by hand
    torch.testing.assert_close(six.double(), shifted(6.0, t_back), rtol=2 * FLOW_RTOL, atol=0)
    assert float(six[0]) == 1.0 and bool((six[1:] > ours[1:]).all())
    # a model's SIGMAS made for SD1.5 are refused on a flow model before any evaluation
    sd_sigmas = torch.tensor([14.6, 4.5, 1.0, 0.13])
    with pytest.raises(ValueError, match="flow-matching model .* starts at 14.6"):
        sample_custom(comfy, sd3, dpmpp_sampler(comfy, "dpmpp_2m"), sd_sigmas)


def test_few_step_sigmas_and_scheduler_on_flux(comfy, flux):
    """ModelSamplingFlux (1024 x 1024: mu from its own formula, computed here) moves the schedule to
    e^mu / (e^mu + 1/t - 1); the `fewstep` KSampler scheduler gives the recipe family of its step count."""
    x1, x2, max_shift, base_shift = 256, 4096, 1.15, 0.5
    mu = (1024 * 1024 / (8 * 8 * 2 * 2)) * (max_shift - base_shift) / (x2 - x1) + base_shift - \
        (max_shift - base_shift) / (x2 - x1) * x1
    patched = comfy.model_advanced.ModelSamplingFlux().patch(flux, max_shift, base_shift, 1024, 1024)[0]
    for model, expected_mu in ((flux, 1.15), (patched, mu)):  # 1.15: comfy.model_sampling.ModelSamplingFlux's default
        ours = few_step_sigmas(comfy, model, "SD1.5 8-step")
        expected = torch.tensor([flux_sigma(expected_mu, float(t)) for t in recipe_times("SD1.5 8-step")],
                                dtype=torch.float64)
        torch.testing.assert_close(ours.double(), expected, rtol=FLOW_RTOL, atol=0)
        assert float(ours[0]) == 1.0 and schedule_problem(ours) is None
        # the scheduler on Flux: the Flux recipe of its step count (Few-Step Sigmas' on the same model) at 5, 6, 8
        for steps in (5, 6, 8):
            torch.testing.assert_close(api(comfy).fewstep_scheduler(model_sampling(comfy, model), steps),
                                       few_step_sigmas(comfy, model, f"Flux {steps}-step"), rtol=0, atol=0)
        # at other counts the Flux 8-step numbers (8 and up) with even step positions: sigma(t) at those timesteps
        flux8 = RECIPES["Flux 8-step"]
        t = recipe_times(Recipe("even", 10, flux8.base_steps, flux8.base_rho, flux8.end_index, flux8.solver,
                                time_rho=flux8.time_rho))
        torch.testing.assert_close(api(comfy).fewstep_scheduler(model_sampling(comfy, model), 10).double(),
                                   torch.tensor([flux_sigma(expected_mu, float(v)) for v in t], dtype=torch.float64),
                                   rtol=FLOW_END_RTOL, atol=0)


def test_edm_model_table_and_sigmas(comfy, edm):
    """ModelSamplingContinuousEDM (sigma 0.002 to 80): entry i at sigma_min (sigma_max / sigma_min)^((i + 1) / 1000),
    eps form; Few-Step Sigmas reads the recipe's timesteps on it."""
    table, form = api(comfy).model_sigma_table(model_sampling(comfy, edm))
    low, high = math.log(0.002), math.log(80.0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000.0
    assert form == "eps"
    torch.testing.assert_close(table, torch.exp(low + t * (high - low)), rtol=1e-6, atol=0)
    ours = few_step_sigmas(comfy, edm)
    expected = torch.exp(low + recipe_times("SD1.5 5-step") * (high - low))
    torch.testing.assert_close(ours.double(), expected, rtol=5e-5, atol=0)
    assert schedule_problem(ours) is None and float(ours[0]) == pytest.approx(80.0, rel=1e-6)


class _ImageToImageFlow:
    """Like newer ComfyUI's IMG_TO_IMG_FLOW: a CONST subclass whose noise_scaling returns the latent unmixed."""

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return latent_image


def test_other_model_kinds_are_refused_by_name(comfy, tiny_model):
    from comfy import model_sampling as ms

    cascade = comfy.model_advanced.ModelSamplingStableCascade().patch(tiny_model, 2.0)[0]
    with pytest.raises(ValueError, match=r"Few-Step Sigmas: model: no Few-Step schedule fits its sampling "
                                         r"\(StableCascadeSampling"):
        few_step_sigmas(comfy, cascade)
    if not hasattr(ms, "CONST"):
        return  # PINNED has no CONST to subclass
    kind = type("ModelSamplingI2IFlow", (_ImageToImageFlow, ms.ModelSamplingDiscreteFlow, ms.CONST), {})
    with pytest.raises(ValueError, match=r"model: its sampling \(_ImageToImageFlow, ModelSamplingDiscreteFlow, "
                                         r"CONST\) mixes noise into the latent neither"):
        api(comfy).model_sigma_table(kind())
    discrete_const = type("ModelSamplingOdd", (ms.ModelSamplingDiscrete, ms.CONST), {})
    with pytest.raises(ValueError, match=r"model: no Few-Step schedule fits its sampling \(ModelSamplingDiscrete, "
                                         r"CONST\): its largest sigma is 14.61"):
        api(comfy).model_sigma_table(discrete_const())


# --- sampling -------------------------------------------------------------------------------------------------------

def dpmpp_sampler(comfy, solver="dpmpp_2m", finish="last_sigma"):
    return node(comfy, "FewStepDPMPPSampler").get_sampler(solver, finish)[0]


def sample_custom(comfy, model, sampler, sigmas, seed=7, cfg=1.0):
    with torch.no_grad():
        out, denoised = comfy.custom_sampler.SamplerCustom().sample(
            model, True, seed, cfg, *dit_conds(), sampler, sigmas, {"samples": torch.zeros(LATENT)})
    return out["samples"], denoised["samples"]


def recorded(model):
    """A clone recording (sigma, D) at each evaluation: BaseModel.apply_model's output is the denoised prediction."""
    clone = model.clone()
    seen = []

    def wrapper(apply_model, args):
        denoised = apply_model(args["input"], args["timestep"], **args["c"])
        seen.append(denoised.clone())
        return denoised

    clone.set_model_unet_function_wrapper(wrapper)
    return clone, seen


def dpmpp_2m_by_hand(noise, denoised, sigmas, form):
    """DPM++2M written out in ``form``'s lambda with the recorded data predictions (cfg 1: one per evaluation)."""
    def alpha(s):
        return 1.0 if form == "eps" else 1.0 - s

    x, previous = noise * sigmas[0] if form == "eps" else noise, None
    for i, d in enumerate(denoised):
        s, s_next = sigmas[i], sigmas[i + 1]
        h = half_log_snr(s_next, form) - half_log_snr(s, form)
        blended = d
        if previous is not None and math.isfinite(half_log_snr(sigmas[i - 1], form)):
            r = (half_log_snr(s, form) - half_log_snr(sigmas[i - 1], form)) / h
            blended = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * previous
        x = (s_next / s) * x - alpha(s_next) * math.expm1(-h) * blended
        previous = d
    return x


def test_const_form_is_what_samples_on_sd3(comfy, sd3):
    """SamplerCustom with Few-Step DPM++2M on SD3 gives the const-form DPM++2M written out here from the model's
    recorded predictions (and ComfyUI's x / (1 - sigma_last) at the end), not the eps-form one; denoised_output is
    the last prediction; finish = denoised hands out its prediction at the last sigma itself."""
    from comfy.sample import prepare_noise

    sigmas = few_step_sigmas(comfy, sd3)
    model, seen = recorded(sd3)
    out, denoised = sample_custom(comfy, model, dpmpp_sampler(comfy), sigmas)
    assert len(seen) == 5 and torch.isfinite(out).all()
    noise = prepare_noise(torch.zeros(LATENT), 7)
    values = [float(s) for s in sigmas]
    process_out = sd3.model.process_latent_out
    expected = process_out(dpmpp_2m_by_hand(noise, seen, values, "const") / (1.0 - values[-1]))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    eps_form = process_out(dpmpp_2m_by_hand(noise, seen, values, "eps") / (1.0 - values[-1]))
    assert (out - eps_form).abs().max() > 100 * (out - expected).abs().max()
    torch.testing.assert_close(denoised, process_out(seen[-1]), rtol=1e-5, atol=1e-5)
    # finish = denoised: one more evaluation at the last sigma, whose prediction is the output (not it / (1 - sigma))
    finished, finished_denoised = sample_custom(comfy, sd3, dpmpp_sampler(comfy, finish="denoised"), sigmas)
    torch.testing.assert_close(finished, finished_denoised, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(finished, denoised, rtol=1e-3, atol=1e-3)  # a new evaluation, not the 5th one


def ksampler(comfy, model, recipe="SD1.5 5-step", params="", seed=3):
    with torch.no_grad():
        out, denoised = node(comfy, "FewStepKSampler").sample(model, seed, 1.0, recipe, "off", *dit_conds(),
                                                              {"samples": torch.zeros(LATENT)}, 1.0, params)
    return out["samples"], denoised["samples"]


@pytest.mark.parametrize("which", ["sd3", "flux"])
def test_ksampler_and_the_five_node_graph_agree_on_dits(comfy, request, which):
    """Few-Step KSampler on SD3 / Flux: finite, deterministic, and bit-identical to Few-Step Sigmas + Few-Step
    UniPC Sampler (the recipe's solver) + SamplerCustom; UniPC with the analytical first step samples too."""
    model = request.getfixturevalue(which)
    out, denoised = ksampler(comfy, model, "SD1.5 5-step UniPC")
    again, _ = ksampler(comfy, model, "SD1.5 5-step UniPC")
    assert torch.isfinite(out).all() and torch.isfinite(denoised).all() and torch.equal(out, again)
    unipc = node(comfy, "FewStepUniPCSampler").get_sampler("auto", "bh1", False, "last_sigma", "noise")[0]
    graph, graph_denoised = sample_custom(comfy, model, unipc, few_step_sigmas(comfy, model, "SD1.5 5-step UniPC"),
                                          seed=3)
    assert torch.equal(out, graph) and torch.equal(denoised, graph_denoised)
    afs = node(comfy, "FewStepUniPCSampler").get_sampler("auto", "bh2", True, "last_sigma", "data")[0]
    x_afs, _ = sample_custom(comfy, model, afs, few_step_sigmas(comfy, model, "SD1.5 6-step"))
    assert torch.isfinite(x_afs).all()


def test_ksampler_end_at_zero_on_sd3(comfy, sd3):
    """end = 0: the last step goes to sigma 0 (ComfyUI divides by 1 - 0), so the output is the last prediction's
    first-order step, i.e. the last denoised prediction itself."""
    params = "fewstep v1: steps=4 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2 solver=dpmpp_2m end=0"
    out, denoised = ksampler(comfy, sd3, "custom", params)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, denoised, rtol=1e-5, atol=1e-5)


def ksampler_names_sample(comfy, model, conds, shape):
    """KSampler with the `fewstep` scheduler and the fewstep_* samplers (and fewstep_unipc on core `simple`):
    finite and deterministic."""
    for sampler_name, scheduler in (("fewstep_dpmpp_2m", "fewstep"), ("fewstep_dpmpp_1s", "fewstep"),
                                    ("fewstep_unipc", "simple")):
        runs = []
        for _ in range(2):
            with torch.no_grad():
                runs.append(comfy.nodes.KSampler().sample(model, 11, 5, 1.0, sampler_name, scheduler, *conds,
                                                          {"samples": torch.zeros(shape)})[0]["samples"])
        assert torch.isfinite(runs[0]).all() and torch.equal(runs[0], runs[1]), (sampler_name, scheduler)


def test_ksampler_names_and_fewstep_scheduler_on_sd3(comfy, sd3):
    ksampler_names_sample(comfy, sd3, dit_conds(), LATENT)
    # the scheduler on a DiscreteFlow model: the SD3.5 recipes (tuned on its axis), not the SD1.5 ones
    for steps in (5, 6, 8):
        torch.testing.assert_close(api(comfy).fewstep_scheduler(model_sampling(comfy, sd3), steps),
                                   few_step_sigmas(comfy, sd3, f"SD3.5 {steps}-step"), rtol=0, atol=0)
    sd_family = few_step_sigmas(comfy, sd3, "SD1.5 6-step")
    assert not torch.allclose(api(comfy).fewstep_scheduler(model_sampling(comfy, sd3), 6), sd_family)


def test_ksampler_names_and_fewstep_scheduler_on_edm(comfy, edm, conds):
    ksampler_names_sample(comfy, edm, conds, (1, 4, 8, 8))
    torch.testing.assert_close(  # the scheduler on the EDM axis: the 5-step family's timesteps, log-linear sigma
        api(comfy).fewstep_scheduler(model_sampling(comfy, edm), 5).double(),
        torch.exp(math.log(0.002) + recipe_times(recipe_for_step_count(5)) * math.log(80.0 / 0.002)),
        rtol=5e-5, atol=0)


# --- FreeU and the tuner --------------------------------------------------------------------------------------------

def test_timed_freeu_passes_a_dit_through_with_one_warning(comfy, sd3, caplog):
    with caplog.at_level(logging.WARNING, logger="ComfyUI-FewStep"):
        patched = node(comfy, "TimedFreeU").patch(sd3, 1.1, 1.1, 0.9, 0.2, "v1", 1, -1, 0.0, 1.0)[0]
    assert patched is sd3
    warnings = [r for r in caplog.records if "no UNet decoder" in r.getMessage()]
    assert len(warnings) == 1 and "SD3" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ComfyUI-FewStep"):  # SDXL 6-step: two FreeU windows, one warning
        with torch.no_grad():
            out = node(comfy, "FewStepKSampler").sample(sd3, 1, 1.0, "SDXL 6-step", "recipe", *dit_conds(),
                                                        {"samples": torch.zeros(LATENT)})[0]["samples"]
    assert torch.isfinite(out).all()
    assert len([r for r in caplog.records if "no UNet decoder" in r.getMessage()]) == 1


def test_tuner_on_sd3_tunes_on_the_flow_axis(comfy, sd3):
    """Few-Step Schedule Tuner on SD3: a schedule of the asked length on the flow axis (starting at 1, at most 1),
    which Few-Step Sigmas gives back from its params text, and which samples."""
    tuned_sigmas, text = node(comfy, "FewStepScheduleTuner").tune(
        sd3, *dit_conds(), 1.0, {"samples": torch.zeros(LATENT)}, 4, "dpmpp_2m", 1, 0, 2.0)
    assert len(tuned_sigmas) == 5 and float(tuned_sigmas[0]) == 1.0
    assert noise_form_problem("const", tuned_sigmas.tolist()) is None
    assert schedule_problem(tuned_sigmas, final_zero=True) is None  # the tuner may end at 0 (end=0)
    torch.testing.assert_close(few_step_sigmas(comfy, sd3, "custom", text), tuned_sigmas)
    out, _ = sample_custom(comfy, sd3, dpmpp_sampler(comfy), tuned_sigmas)
    assert torch.isfinite(out).all()


# --- the schedule route (the graph on the nodes) --------------------------------------------------------------------

def schedule_route(comfy, **query):
    import sys

    routes = sys.modules[comfy.pack.__name__ + ".nodes.routes"]
    return routes.schedule_reply({"recipe": "SDXL 6-step UniPC", "denoise": "1.0", **query})


def test_route_draws_the_schedule_on_a_flow_axis(comfy):
    """flow_shift (what the graph sends when a ModelSamplingSD3 / AuraFlow / Flux node is up the model input): the
    sigmas on that flow axis, the AFS midpoint in the const form, no FreeU on any step; without it the SD axis."""
    from fewstep.schedule import flow_sigma_table
    from fewstep.unipc import afs_midpoint

    status, sd = schedule_route(comfy)
    assert status == 200 and sd["axis"] == {"kind": "sd"} and sd["sigmas"][0] > 14 and sd["recipe_freeu"][0]["steps"]
    status, flow = schedule_route(comfy, flow_shift="3.0", freeu=["1,-1"])
    assert status == 200 and flow["axis"] == {"kind": "flow", "shift": 3.0}
    expected = shifted(3.0, recipe_times("SDXL 6-step UniPC"))
    torch.testing.assert_close(torch.tensor(flow["sigmas"], dtype=torch.float64), expected, rtol=1e-2, atol=0)
    assert flow["sigmas"][0] == 1.0 and flow["timesteps"][0] == 999.0
    # the same timesteps, on another axis (read back in log-sigma: within 0.02 of those the sigmas were made at)
    assert flow["timesteps"] == pytest.approx(sd["timesteps"], abs=0.05)
    s0, s1 = flow["sigmas"][:2]
    assert flow["afs_midpoint"]["sigma"] == pytest.approx(afs_midpoint(s0, s1, flow_sigma_table(3.0), "const"),
                                                          rel=1e-6)
    assert flow["afs_midpoint"]["timestep"] == pytest.approx((flow["timesteps"][0] + flow["timesteps"][1]) / 2,
                                                             abs=1e-3)
    assert flow["afs_midpoint"]["sigma"] == pytest.approx(shifted(3.0, (flow["afs_midpoint"]["timestep"] + 1) / 1000),
                                                          rel=1e-4)
    assert [w["steps"] for w in flow["freeu"] + flow["recipe_freeu"]] == [[], []]
    assert all("DiT" in w["warning"] for w in flow["freeu"] + flow["recipe_freeu"])
    status, bad = schedule_route(comfy, flow_shift="-1")
    assert status == 400 and bad["error"].startswith("flow_shift = '-1' must be a number above 0")


def test_route_flow_axis_is_few_step_sigmas_on_sd3(comfy, sd3):
    """On SD3 (shift 3) the route's flow axis gives what Few-Step Sigmas gives on the model."""
    status, flow = schedule_route(comfy, recipe="SD1.5 6-step", flow_shift="3")
    assert status == 200
    torch.testing.assert_close(torch.tensor(flow["sigmas"]), few_step_sigmas(comfy, sd3, "SD1.5 6-step"),
                               rtol=1e-6, atol=0)


# --- after a run: the schedule the nodes sampled, on the model's own axis (their ui) ------------------------------

def node_ui(comfy, node_id, *args):
    """The one schedule in a node's ui (what ComfyUI sends to the page as it runs), and the node's result."""
    returned = node(comfy, node_id).run(*args)
    (payload,) = returned["ui"]["fewstep_schedule"]
    return payload, returned["result"]


def test_few_step_sigmas_ui_carries_the_flow_axis_and_the_sigmas_it_output(comfy, sd3, flux):
    """On SD3 and Flux (plain, no shift node: what the page cannot see) the ui says flow with the model's shift (SD3:
    3; Flux: e^1.15) and holds exactly the SIGMAS output; the AFS midpoint is in the const form, no FreeU step; the
    route asked for that axis says the same."""
    from fewstep.schedule import flow_sigma_table
    from fewstep.unipc import afs_midpoint

    for model, shift in ((sd3, SD3_SHIFT), (flux, math.exp(1.15))):
        payload, (sigmas,) = node_ui(comfy, "FewStepSigmas", model, "SDXL 6-step UniPC", 1.0, 5, 8, 5.0, 6, 1.2, "")
        assert payload["axis"]["kind"] == "flow" and payload["axis"]["shift"] == pytest.approx(shift, rel=1e-5)
        assert payload["sigmas"] == sigmas.tolist() == few_step_sigmas(comfy, model, "SDXL 6-step UniPC").tolist()
        assert payload["sigmas"][0] == 1.0 and payload["nfe"] == 6 and payload["solver"] == "unipc_afs"
        s0, s1 = payload["sigmas"][:2]
        midpoint = afs_midpoint(s0, s1, flow_sigma_table(shift), "const")
        assert payload["afs_midpoint"]["sigma"] == pytest.approx(midpoint, rel=1e-5) == payload["evaluations"][0]
        assert all(w["steps"] == [] and "DiT" in w["warning"] for w in payload["recipe_freeu"])
        status, reply = schedule_route(comfy, flow_shift=str(payload["axis"]["shift"]))
        assert status == 200 and reply["axis"] == payload["axis"]
        torch.testing.assert_close(torch.tensor(payload["sigmas"]), torch.tensor(reply["sigmas"]), rtol=1e-5, atol=0)


def test_few_step_ksampler_ui_on_sd3_is_what_it_sampled(comfy, sd3):
    """Few-Step KSampler on SD3: its ui is on the flow axis and its sigmas are those the model was evaluated at."""
    model, seen = recorded(sd3)
    with torch.no_grad():
        payload, (out, _) = node_ui(comfy, "FewStepKSampler", model, 3, 1.0, "SD1.5 5-step", "recipe", *dit_conds(),
                                    {"samples": torch.zeros(LATENT)}, 1.0, "")
    assert torch.isfinite(out["samples"]).all() and len(seen) == 5
    assert payload["axis"] == {"kind": "flow", "shift": SD3_SHIFT}
    assert payload["sigmas"] == few_step_sigmas(comfy, sd3).tolist() and payload["evaluations"] == payload["sigmas"][:5]
    assert [w["steps"] for w in payload["recipe_freeu"]] == [[]]  # the recipe's FreeU passes a DiT through


def test_few_step_sigmas_ui_on_edm_is_the_continuous_axis(comfy, edm):
    payload, (sigmas,) = node_ui(comfy, "FewStepSigmas", edm, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2, "")
    assert payload["axis"] == {"kind": "continuous", "sigma_min": pytest.approx(0.002), "sigma_max": 80.0}
    assert payload["sigmas"] == sigmas.tolist() and payload["sigmas"][0] == pytest.approx(80.0, rel=1e-6)
