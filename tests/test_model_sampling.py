"""The schedule on models patched by ComfyUI's own ModelSamplingDiscrete node (eps, v-prediction,
zero-terminal SNR, LCM): the recipes end at the same TIMESTEP as on the standard SD1.x / SDXL
schedule, and start at the model's own first sigma (t = 999).

Expected values are computed here, independently of the pack: the timesteps from RECIPES.md's
definition in numpy, the sigmas from the patched model's own table (ComfyUI's ``sigmas``) with the
reference's alphas_cumprod interpolation, and the end timestep as ComfyUI's ``model_sampling.timestep``
maps the last sigma.
"""

import numpy as np
import pytest
import torch
from conftest import count_evaluations, latent
from test_comfy_nodes import fewstep_sampler, ksampler, node, sample

from fewstep.params import parse_params
from fewstep.recipes import RECIPES, recipe_for_step_count

BETAS = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
AC = np.cumprod(1.0 - BETAS)
STANDARD = np.sqrt((1.0 - AC) / AC)
PATCHES = [("eps", False), ("eps", True), ("v_prediction", False), ("v_prediction", True), ("lcm", False),
           ("lcm", True)]
LCM_TIMESTEPS = list(range(19, 1000, 20))  # the 50 timesteps an LCM model knows (ComfyUI: skip 20, offset 19)


def reference_timesteps(N, n, rho, k, time_rho=1.2, denoise=1.0, ramp=None):
    """RECIPES.md, steps 1-3, on the standard training schedule (numpy, not the pack's code); ``ramp``, a tuned
    recipe's interior positions in the Karras spacing (params.py), replaces the even j / N."""
    smin, smax = STANDARD[0], STANDARD[-1]
    base = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    t_end = np.interp(np.log(base[k]), np.log(STANDARD), np.arange(1000.0))
    t_start = t_end + denoise * (999.0 - t_end)
    u = [j / N for j in range(N + 1)] if ramp is None else [0.0, *ramp, 1.0]
    return np.array([(t_start ** (1 / time_rho) + uj * (t_end ** (1 / time_rho) - t_start ** (1 / time_rho)))
                     ** time_rho for uj in u])


def sigma_of_timesteps(timesteps, model_sampling):
    """Sigmas of fractional timesteps on a patched model: the reference's alphas_cumprod interpolation between
    the model's own sigmas at the two neighbouring integer timesteps (an LCM model's own sigma(t) there)."""
    table = model_sampling.sigmas.double().numpy()
    if len(table) != 1000:
        table = model_sampling.sigma(torch.arange(1000.0)).double().numpy()
    ac = 1.0 / (1.0 + table ** 2)
    t = np.clip(timesteps, 0, 999)
    low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
    mixed = ac[low] + (t - low) * (ac[high] - ac[low])
    return np.sqrt((1.0 - mixed) / mixed)


def patched(comfy, model, sampling, zsnr):
    m = comfy.model_advanced.ModelSamplingDiscrete().patch(model, sampling, zsnr)[0]
    ms = m.get_model_object("model_sampling") if hasattr(m, "get_model_object") else m.object_patches["model_sampling"]
    return m, ms


def comfy_timestep(model_sampling, sigmas):
    return [int(t) for t in model_sampling.timestep(torch.as_tensor(sigmas, dtype=torch.float32)).tolist()]


def expected_end_timestep(sampling, t_end):
    """Where ComfyUI puts the last sigma: the nearest integer timestep, or the nearest of an LCM model's 50
    (below 19 an LCM model has none: its sigma(t) clamps to t = 19)."""
    if sampling == "lcm":
        return min(LCM_TIMESTEPS, key=lambda t: abs(t - max(t_end, 19.0)))
    return int(round(t_end))


def fewstep_sigmas_node(comfy, model, recipe="custom", denoise=1.0, custom=(5, 8, 5.0, 6, 1.2), params=""):
    return node(comfy, "FewStepSigmas").get_sigmas(model, recipe, denoise, *custom, params=params)[0]


@pytest.mark.parametrize("sampling, zsnr", PATCHES)
def test_recipes_end_at_the_standard_timestep_and_start_at_the_model_first_sigma(comfy, tiny_model, sampling, zsnr):
    model, ms = patched(comfy, tiny_model, sampling, zsnr)
    sigma_max = float(ms.sigmas[-1])
    if zsnr:
        assert sigma_max > 4000  # zero-terminal SNR: 4518.8
    for name, r in RECIPES.items():
        ours = fewstep_sigmas_node(comfy, model, name)
        timesteps = reference_timesteps(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho, ramp=r.ramp)
        assert len(ours) == r.steps + 1 and torch.isfinite(ours).all() and bool((ours[1:] < ours[:-1]).all())
        assert float(ours[0]) == pytest.approx(sigma_max, rel=1e-6)  # t = 999: the model's own first sigma
        np.testing.assert_allclose(ours.double().numpy(), sigma_of_timesteps(timesteps, ms), rtol=2e-6)
        # ComfyUI's own log-sigma interpolation of the same timesteps agrees to the documented 0.3 %
        # (an LCM model's 20-timestep gaps: 1 %)
        comfy_sigmas = ms.sigma(torch.tensor(timesteps, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(ours.double().numpy(), comfy_sigmas, rtol=1e-2 if sampling == "lcm" else 3.5e-3)
        assert comfy_timestep(ms, ours)[-1] == expected_end_timestep(sampling, timesteps[-1])
        assert comfy_timestep(ms, ours)[0] == 999


def test_zero_terminal_snr_end_points_of_the_issue(comfy, tiny_model):
    """The issue's numbers: on v-prediction + zsnr, SD1.5 5-step ends at timestep 18 (not 579) and SDXL 8-step
    at 3 (not 26), at nearly the standard end sigmas 0.132 and 0.060."""
    model, ms = patched(comfy, tiny_model, "v_prediction", True)
    five, eight = (fewstep_sigmas_node(comfy, model, name) for name in ("SD1.5 5-step", "SDXL 8-step"))
    assert comfy_timestep(ms, five)[-1] == 18 and comfy_timestep(ms, eight)[-1] == 3
    assert float(five[-1]) == pytest.approx(0.132, rel=0.05) and float(eight[-1]) == pytest.approx(0.060, rel=0.05)
    assert float(five[0]) == pytest.approx(4518.76, rel=1e-4) and float(eight[0]) == pytest.approx(4518.76, rel=1e-4)


@pytest.mark.parametrize("sampling, zsnr", [("eps", False), ("v_prediction", True), ("lcm", False)])
def test_custom_params_and_denoise_follow_the_same_rule(comfy, tiny_model, sampling, zsnr):
    model, ms = patched(comfy, tiny_model, sampling, zsnr)
    # custom widgets equal to a recipe give that recipe, and a params string gives its own timesteps
    torch.testing.assert_close(fewstep_sigmas_node(comfy, model, custom=(8, 12, 12.0, 10, 1.2)),
                               fewstep_sigmas_node(comfy, model, "SDXL 8-step"), rtol=0, atol=0)
    text = "fewstep v1: steps=6 base_steps=12 base_rho=7 end_index=9 time_rho=1.3 ramp=0.1,0.3,0.5,0.7,0.8"
    ours = fewstep_sigmas_node(comfy, model, params=text)
    p = parse_params(text)
    t_end = reference_timesteps(p.steps, p.base_steps, p.base_rho, p.end_index, p.time_rho)[-1]
    assert float(ours[0]) == pytest.approx(float(ms.sigmas[-1]), rel=1e-6)
    assert comfy_timestep(ms, ours)[-1] == expected_end_timestep(sampling, t_end)
    # denoise < 1 starts at t_end + denoise * (999 - t_end) on the model, and ends where denoise 1 ends
    for denoise in (0.3, 0.75):
        timesteps = reference_timesteps(5, 8, 5.0, 6, denoise=denoise)
        half = fewstep_sigmas_node(comfy, model, "SD1.5 5-step", denoise=denoise)
        np.testing.assert_allclose(half.double().numpy(), sigma_of_timesteps(timesteps, ms), rtol=2e-6)
        assert float(half[-1]) == float(fewstep_sigmas_node(comfy, model, "SD1.5 5-step")[-1])


@pytest.mark.parametrize("sampling, zsnr", PATCHES)
@pytest.mark.parametrize("recipe, solver", [("SD1.5 5-step", "dpmpp_1s"), ("SDXL 8-step", "dpmpp_2m")])
def test_sampling_a_patched_model_takes_n_evaluations_at_the_schedule(comfy, tiny_model, conds, sampling, zsnr,
                                                                       recipe, solver):
    model, ms = patched(comfy, tiny_model, sampling, zsnr)
    schedule = fewstep_sigmas_node(comfy, model, recipe)
    counted, calls = count_evaluations(model)
    out, denoised = sample(comfy, counted, fewstep_sampler(comfy, solver), schedule, conds)
    assert len(calls) == RECIPES[recipe].steps  # N evaluations, at the N first sigmas
    np.testing.assert_allclose(calls, schedule[:-1].double().numpy(), rtol=1e-6)
    assert torch.isfinite(out).all() and torch.isfinite(denoised).all()


@pytest.mark.parametrize("sampling, zsnr", [("eps", False), ("v_prediction", True), ("lcm", False)])
@pytest.mark.parametrize("sampler_name, steps", [("fewstep_dpmpp_1s", 5), ("fewstep_dpmpp_2m", 8)])
def test_ksampler_fewstep_scheduler_follows_the_rule(comfy, tiny_model, conds, sampling, zsnr, sampler_name, steps):
    """The `fewstep` scheduler on KSampler: the same schedule as Few-Step Sigmas on that model."""
    model, ms = patched(comfy, tiny_model, sampling, zsnr)
    counted, calls = count_evaluations(model)
    out = ksampler(comfy, counted, conds, sampler_name, "fewstep", steps)
    family = "SD1.5 5-step" if steps == 5 else "SD1.5 8-step"
    r = RECIPES[family]
    expected = fewstep_sigmas_node(comfy, model, family)
    assert len(calls) == steps and torch.isfinite(out).all()
    np.testing.assert_allclose(calls, expected[:-1].double().numpy(), rtol=1e-6)
    assert calls[0] == pytest.approx(float(ms.sigmas[-1]), rel=1e-6)
    # the end point is the recipe's: the scheduler's last sigma is the node's
    timesteps = reference_timesteps(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho)
    assert comfy_timestep(ms, expected)[-1] == expected_end_timestep(sampling, timesteps[-1])
    # KSampler's denoise < 1: int(steps / denoise) steps of the family on the model, the last `steps` run
    calls.clear()
    ksampler(comfy, counted, conds, sampler_name, "fewstep", steps, denoise=0.5)
    f = recipe_for_step_count(2 * steps)
    longer = fewstep_sigmas_node(comfy, model, custom=(f.steps, f.base_steps, f.base_rho, f.end_index, f.time_rho))
    np.testing.assert_allclose(calls, longer[-steps - 1:-1].double().numpy(), rtol=1e-6)


def test_tuner_on_a_zero_terminal_snr_model(comfy, tiny_model, conds):
    """The tuner searches on the model's own table with the same rule: its schedule starts at the model's
    first sigma and ends at the timestep its params give on the standard schedule, and Few-Step Sigmas
    with its params string gives exactly its sigmas on that model."""
    model, ms = patched(comfy, tiny_model, "v_prediction", True)
    comfy.pack.nodes.tuning.CACHE.clear()
    tuner = node(comfy, "FewStepScheduleTuner")
    sigmas, text = tuner.tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 1, 0, 1.0)
    p = parse_params(text)
    t_end = reference_timesteps(p.steps, p.base_steps, p.base_rho, p.end_index, p.time_rho)[-1]
    assert float(sigmas[0]) == pytest.approx(float(ms.sigmas[-1]), rel=1e-6)
    assert comfy_timestep(ms, sigmas)[-1] == expected_end_timestep("v_prediction", t_end)
    assert torch.equal(fewstep_sigmas_node(comfy, model, params=text), sigmas)


def test_lcm_refuses_a_custom_schedule_with_several_steps_below_its_lowest_timestep(comfy, tiny_model):
    """An LCM model has no sigma below timestep 19: a schedule with two or more steps there would repeat its
    lowest sigma. Valid on the standard table, the node refuses it on that model, naming the inputs."""
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    custom = (20, 8, 5.0, 7, 3.0)  # ends at timestep 0, crowded there
    assert (reference_timesteps(*custom) < 19).sum() >= 3 and cls.VALIDATE_INPUTS("custom", *custom, 1.0) is True
    model, ms = patched(comfy, tiny_model, "lcm", False)
    with pytest.raises(ValueError) as raised:
        fewstep_sigmas_node(comfy, model, custom=custom)
    message = str(raised.value)
    assert message.startswith("Few-Step Sigmas: steps = 20, base_steps = 8, base_rho = 5.0, end_index = 7, "
                              "time_rho = 3.0 and denoise = 1.0 give a schedule that cannot be sampled on this "
                              "model's noise schedule (sigma 0.1345 to 14.61): ")
    assert f"This model has no sigma below {float(ms.sigmas[0]):.4g} (lcm sampling: no timestep below 19)" in message
    assert "down to 0 (time_rho = 3.0)" in message
    eps_model, _ = patched(comfy, tiny_model, "eps", False)  # the same inputs on a full table: fine
    assert len(fewstep_sigmas_node(comfy, eps_model, custom=custom)) == 21


def test_a_plain_clone_keeps_its_own_schedule_while_a_patched_clone_is_loaded(comfy, tiny_model):
    """ComfyUI applies a loaded clone's object patches to the model all clones share (PINNED keeps the
    original in a shared backup): a plain clone's schedule must still be read on the original table."""
    plain = tiny_model.clone()
    expected = node(comfy, "FewStepSigmas").get_sigmas(plain, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
    zsnr, zsnr_sampling = patched(comfy, tiny_model.clone(), "v_prediction", True)
    zsnr.patch_model()
    try:
        assert tiny_model.model.model_sampling is zsnr_sampling  # the patch sits on the shared model now
        got = node(comfy, "FewStepSigmas").get_sigmas(plain, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
        on_zsnr = node(comfy, "FewStepSigmas").get_sigmas(zsnr, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
    finally:
        zsnr.unpatch_model()
    assert torch.equal(got, expected)
    assert float(on_zsnr[0]) > 4000 and float(expected[0]) == pytest.approx(14.6146, rel=1e-4)
