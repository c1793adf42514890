"""The nodes inside a real ComfyUI (PINNED by default, or COMFYUI_PATH) on a tiny real SD1.5 UNet."""

import logging
from collections import defaultdict

import pytest
import torch
from conftest import TINY_UNET, count_evaluations, latent

from fewstep.recipes import RECIPES, recipe_for_step_count
from fewstep.schedule import recipe_sigmas, standard_sigma_table

IDS = {"FewStepSigmas": "Few-Step Sigmas", "FewStepDPMPPSampler": "Few-Step DPM++ Sampler", "TimedFreeU": "Timed FreeU",
       "FewStepUniPCSampler": "Few-Step UniPC Sampler"}
DEEP = TINY_UNET["model_channels"] * 4  # backbone channels of the decoder blocks b1/s1 apply to


def node(comfy, node_id):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def sigmas(comfy, model, recipe="SD1.5 5-step", denoise=1.0, custom=(5, 8, 5.0, 6, 1.2)):
    return node(comfy, "FewStepSigmas").get_sigmas(model, recipe, denoise, *custom)[0]


def fewstep_sampler(comfy, solver="dpmpp_1s", finish="last_sigma"):
    return node(comfy, "FewStepDPMPPSampler").get_sampler(solver, finish)[0]


def timed_freeu(comfy, model, b=(1.1, 1.1, 0.9, 0.2), version="v1", steps=(1, -1), percent=(0.0, 1.0)):
    return node(comfy, "TimedFreeU").patch(model, *b, version, *steps, *percent)[0]


def sample(comfy, model, sampler, sigma_schedule, conds, seed=7, cfg=5.5):
    with torch.no_grad():
        out, denoised = comfy.custom_sampler.SamplerCustom().sample(
            model, True, seed, cfg, conds[0], conds[1], sampler, sigma_schedule, latent())
    return out["samples"], denoised["samples"]


def core_sampler(comfy, name):
    return comfy.custom_sampler.KSamplerSelect().get_sampler(name)[0]


def record_backbone(model, patch):
    """Patch ``model`` with ``patch`` between two recorders; returns (patched model, records).

    Each record is (sigma, h before, h after) for the deepest decoder blocks, observed inside the
    real UNet forward, so a test sees what the patch did at each step.
    """
    seen = []

    def before(h, hsp, transformer_options):
        if h.shape[1] == DEEP:
            seen.append([float(transformer_options["sigmas"].max()), h.clone()])
        return h, hsp

    def after(h, hsp, transformer_options):
        if h.shape[1] == DEEP:
            seen[-1].append(h.clone())
        return h, hsp

    first = model.clone()
    first.set_model_output_block_patch(before)
    last = patch(first).clone()
    last.set_model_output_block_patch(after)
    return last, seen


def backbone_factor_by_step(records, schedule):
    """The factor applied to the first half of the deep backbone channels, per step (1.0 = untouched)."""
    values = [float(s) for s in schedule]
    factors = defaultdict(set)
    for sigma, before, after in records:
        step = min(range(len(values)), key=lambda i: abs(values[i] - sigma)) + 1
        half = before.shape[1] // 2
        assert torch.equal(after[:, half:], before[:, half:])
        ratio = (after[:, :half] / before[:, :half])
        factors[step].add(round(float(ratio.median()), 4))
        assert torch.allclose(ratio, ratio.median().expand_as(ratio), rtol=1e-4, atol=1e-4)
    return {step: f.pop() for step, f in sorted(factors.items()) if len(f) == 1}


# --- loading and the schedule node -------------------------------------------------------------

def test_nodes_load_through_comfyui_loader(comfy):
    for node_id, display in IDS.items():
        assert comfy.nodes.NODE_CLASS_MAPPINGS[node_id] is comfy.pack.NODE_CLASS_MAPPINGS[node_id]
        assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
    assert comfy.pack.WEB_DIRECTORY == "./js"
    inputs = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"].INPUT_TYPES()["required"]
    assert inputs["recipe"][0] == ["SD1.5 5-step", "SD1.5 6-step", "SD1.5 8-step", "SDXL 6-step", "SDXL 8-step",
                                   "SDXL 6-step UniPC", "SDXL 8-step UniPC", "SD1.5 5-step UniPC",
                                   "SD1.5 6-step UniPC", "SD1.5 8-step UniPC", "SD3.5 5-step", "SD3.5 6-step",
                                   "SD3.5 8-step", "Flux 5-step", "Flux 6-step", "Flux 8-step", "custom"]
    assert comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"].CATEGORY == "sampling/custom_sampling/schedulers"
    assert comfy.nodes.NODE_CLASS_MAPPINGS["FewStepDPMPPSampler"].CATEGORY == "sampling/custom_sampling/samplers"
    assert comfy.nodes.NODE_CLASS_MAPPINGS["FewStepUniPCSampler"].CATEGORY == "sampling/custom_sampling/samplers"
    assert comfy.nodes.NODE_CLASS_MAPPINGS["TimedFreeU"].CATEGORY == "model_patches/unet"


@pytest.mark.parametrize("name", list(RECIPES))
def test_sigmas_node_reproduces_recipes(comfy, tiny_model, name):
    ours = sigmas(comfy, tiny_model, name)
    expected = recipe_sigmas(RECIPES[name], standard_sigma_table())
    torch.testing.assert_close(ours, expected, rtol=2e-6, atol=0)
    assert len(ours) == RECIPES[name].steps + 1 and ours[-1] > 0


def test_sigmas_node_custom_and_denoise(comfy, tiny_model):
    custom = sigmas(comfy, tiny_model, "custom", custom=(8, 12, 12.0, 10, 1.2))
    torch.testing.assert_close(custom, sigmas(comfy, tiny_model, "SDXL 8-step"))
    half = sigmas(comfy, tiny_model, "SD1.5 5-step", denoise=0.5)
    assert len(half) == 6 and half[0] < 3.0 and float(half[-1]) == pytest.approx(0.132002, rel=1e-5)


def test_sigmas_follow_model_sampling_patches(comfy, tiny_model):
    """A ModelSamplingDiscrete patch (v-prediction, zero-terminal-SNR) is what the schedule is read on: the
    same timesteps, the model's own sigmas (tests/test_model_sampling.py holds the rule in detail)."""
    patched = comfy.model_advanced.ModelSamplingDiscrete().patch(tiny_model, "v_prediction", True)[0]
    ours = sigmas(comfy, patched)
    table = patched.get_model_object("model_sampling").sigmas if hasattr(patched, "get_model_object") \
        else patched.object_patches["model_sampling"].sigmas
    torch.testing.assert_close(ours, recipe_sigmas(RECIPES["SD1.5 5-step"], table.double()))
    assert ours[0] > 100  # zero-terminal-SNR: the first sigma is huge
    assert float(ours[-1]) == pytest.approx(0.132, rel=0.05)  # and it still stops near the paper's end sigma
    assert not torch.allclose(ours, sigmas(comfy, tiny_model))


def test_sigmas_node_rejects_models_it_does_not_fit(comfy, tiny_model):
    """Stable Cascade's sampling (its table is flat where alphas_cumprod is clamped) is refused by name; flow and
    continuous models are served (tests/test_flow_models.py)."""
    patched = comfy.model_advanced.ModelSamplingStableCascade().patch(tiny_model, 2.0)[0]
    with pytest.raises(ValueError, match=r"Few-Step Sigmas: model: no Few-Step schedule fits its sampling "
                                         r"\(StableCascadeSampling, EPS"):
        sigmas(comfy, patched)


def test_sigmas_validation_names_the_input(comfy):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    assert cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 8, 1.2, 1.0).startswith(
        "end_index = 8 is out of range: allowed 1 to 7")
    assert "steps = 0" in cls.VALIDATE_INPUTS("custom", 0, 8, 5.0, 6, 1.2, 1.0)
    assert cls.VALIDATE_INPUTS("SD1.5 5-step", 5, 8, 5.0, 8, 1.2, 1.0) is True  # named recipes ignore custom widgets
    assert "recipe = 'SD2 4-step'" in cls.VALIDATE_INPUTS("SD2 4-step", 5, 8, 5.0, 6, 1.2, 1.0)
    assert "denoise = 0.0" in cls.VALIDATE_INPUTS("SD1.5 5-step", 5, 8, 5.0, 6, 1.2, 0.0)
    with pytest.raises(ValueError, match="Few-Step Sigmas: end_index"):
        cls().get_sigmas(None, "custom", 1.0, 5, 8, 5.0, 9, 1.2)


# --- the sampler --------------------------------------------------------------------------------

@pytest.mark.parametrize("ours, core, recipe", [("dpmpp_1s", "euler", "SD1.5 5-step"),
                                                 ("dpmpp_2m", "dpmpp_2m", "SD1.5 8-step"),
                                                 ("dpmpp_2m", "dpmpp_2m", "SDXL 8-step")])
def test_solvers_equal_comfyui_samplers(comfy, tiny_model, conds, ours, core, recipe):
    schedule = sigmas(comfy, tiny_model, recipe)
    x_ours, d_ours = sample(comfy, tiny_model, fewstep_sampler(comfy, ours), schedule, conds)
    x_core, d_core = sample(comfy, tiny_model, core_sampler(comfy, core), schedule, conds)
    torch.testing.assert_close(x_ours, x_core, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d_ours, d_core, rtol=1e-4, atol=1e-4)
    assert (x_ours - d_ours).abs().mean() > 1e-3  # the paper's output still carries the last sigma's noise


def test_sampler_counts_and_callback(comfy, tiny_model, conds):
    schedule = sigmas(comfy, tiny_model, "SD1.5 6-step")
    counted, calls = count_evaluations(tiny_model)
    out, denoised = sample(comfy, counted, fewstep_sampler(comfy), schedule, conds)
    assert len(calls) == 6  # NFE = N
    calls.clear()
    out2, denoised2 = sample(comfy, counted, fewstep_sampler(comfy, finish="denoised"), schedule, conds)
    assert len(calls) == 7 and calls[-1] == pytest.approx(float(schedule[-1]), rel=1e-5)
    torch.testing.assert_close(out2, denoised2)  # the returned latent is the final prediction
    assert not torch.allclose(out2, out)


def test_sampler_reports_every_step_to_comfyui(comfy, tiny_model, conds):
    import comfy.utils as utils

    seen = []
    hook = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(lambda value, total, preview, *rest, **kwargs: seen.append((value, total)))
    try:
        sample(comfy, tiny_model, fewstep_sampler(comfy), sigmas(comfy, tiny_model, "SD1.5 5-step"), conds)
    finally:
        utils.set_progress_bar_global_hook(hook)
    assert seen == [(i, 5) for i in range(1, 6)]


def test_v_prediction_model_samples(comfy, tiny_model, conds):
    v_model = comfy.model_advanced.ModelSamplingDiscrete().patch(tiny_model, "v_prediction", False)[0]
    schedule = sigmas(comfy, v_model, "SD1.5 8-step")
    x_ours, _ = sample(comfy, v_model, fewstep_sampler(comfy, "dpmpp_2m"), schedule, conds)
    x_core, _ = sample(comfy, v_model, core_sampler(comfy, "dpmpp_2m"), schedule, conds)
    x_eps, _ = sample(comfy, tiny_model, fewstep_sampler(comfy, "dpmpp_2m"), schedule, conds)
    torch.testing.assert_close(x_ours, x_core, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(x_ours).all() and not torch.allclose(x_ours, x_eps)


# --- Timed FreeU --------------------------------------------------------------------------------

@pytest.mark.parametrize("version, core_node", [("v1", "FreeU"), ("v2", "FreeU_V2")])
def test_timed_freeu_whole_window_equals_core_freeu(comfy, tiny_model, conds, version, core_node):
    b = (1.3, 1.2, 0.8, 0.3)
    schedule = sigmas(comfy, tiny_model, "SD1.5 5-step")
    core = getattr(comfy.freelunch, core_node)().patch(tiny_model, *b)[0]
    ours = timed_freeu(comfy, tiny_model, b, version)
    x_core, _ = sample(comfy, core, fewstep_sampler(comfy), schedule, conds)
    x_ours, _ = sample(comfy, ours, fewstep_sampler(comfy), schedule, conds)
    x_plain, _ = sample(comfy, tiny_model, fewstep_sampler(comfy), schedule, conds)
    effect = (x_ours - x_plain).abs().max()
    assert effect > 1e-2 * x_plain.abs().max()  # FreeU did something
    assert (x_ours - x_core).abs().max() < 1e-4 * effect  # and the same thing as core (round-off apart)


def test_timed_freeu_empty_window_equals_no_patch_and_says_so(comfy, tiny_model, conds, caplog):
    """A step window that selects no step of THIS schedule (beyond its end, or mixed signs on a short one) does
    nothing and logs a warning once; one that is empty for every schedule is refused (see the validation test)."""
    schedule = sigmas(comfy, tiny_model, "SD1.5 5-step")
    x_plain, _ = sample(comfy, tiny_model, fewstep_sampler(comfy), schedule, conds)
    for steps in [(6, 9), (5, -3)]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="ComfyUI-FewStep"):
            x_empty, _ = sample(comfy, timed_freeu(comfy, tiny_model, steps=steps), fewstep_sampler(comfy), schedule,
                                conds)
        assert torch.equal(x_empty, x_plain)
        warnings = [r.getMessage() for r in caplog.records if "Timed FreeU" in r.getMessage()]
        assert warnings == [f"Timed FreeU: first_step = {steps[0]} and last_step = {steps[1]} select no step of this "
                            f"5-step schedule (they resolve to steps {steps[0]} to "
                            f"{steps[1] if steps[1] > 0 else 6 + steps[1]}), so this Timed FreeU does nothing"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="ComfyUI-FewStep"):  # a window that selects a step: not a word
        sample(comfy, timed_freeu(comfy, tiny_model, steps=(5, -1)), fewstep_sampler(comfy), schedule, conds)
    assert not [r for r in caplog.records if "Timed FreeU" in r.getMessage()]


@pytest.mark.parametrize("steps, active", [((2, 4), {2, 3, 4}), ((-3, -1), {4, 5, 6}), ((6, 6), {6}), ((1, 1), {1})])
def test_timed_freeu_partial_window_changes_exactly_its_steps(comfy, tiny_model, conds, steps, active):
    schedule = sigmas(comfy, tiny_model, "SD1.5 6-step")
    model, records = record_backbone(tiny_model, lambda m: timed_freeu(comfy, m, (1.5, 1.1, 0.9, 0.2), steps=steps))
    sample(comfy, model, fewstep_sampler(comfy), schedule, conds)
    assert backbone_factor_by_step(records, schedule) == {s: (1.5 if s in active else 1.0) for s in range(1, 7)}


def test_two_timed_freeu_nodes_compose_sdxl_6_step_timing(comfy, tiny_model, conds):
    """The SDXL 6-step recipe: off, (1.1, ...) at steps 2-4, off, (1.3, 1.4, ...) at step 6."""
    schedule = sigmas(comfy, tiny_model, "SDXL 6-step")
    settings = RECIPES["SDXL 6-step"].freeu

    def chain(m):
        for s in settings:
            m = timed_freeu(comfy, m, (s.b1, s.b2, s.s1, s.s2), steps=(s.first_step, s.last_step))
        return m

    model, records = record_backbone(tiny_model, chain)
    sample(comfy, model, fewstep_sampler(comfy), schedule, conds)
    assert backbone_factor_by_step(records, schedule) == {1: 1.0, 2: 1.1, 3: 1.1, 4: 1.1, 5: 1.0, 6: 1.3}


def test_timed_freeu_percent_window_with_a_core_sampler(comfy, tiny_model, conds):
    schedule = sigmas(comfy, tiny_model, "SD1.5 5-step")  # 14.6, 4.52, 1.96, 1.00, 0.50 | 0.13
    ms = tiny_model.model.model_sampling
    low, high = [float(ms.percent_to_sigma(p)) for p in (0.6, 0.35)]
    assert 1.96 < high < 4.5 and 1.0 < low < 1.96
    model, records = record_backbone(tiny_model,
                                     lambda m: timed_freeu(comfy, m, (1.5, 1.1, 0.9, 0.2), percent=(0.35, 0.6)))
    sample(comfy, model, core_sampler(comfy, "euler"), schedule, conds)
    assert backbone_factor_by_step(records, schedule) == {1: 1.0, 2: 1.0, 3: 1.5, 4: 1.0, 5: 1.0}


def test_timed_freeu_step_window_with_a_core_sampler(comfy, tiny_model, conds):
    """CURRENT passes the schedule to patches itself; PINNED cannot, and says so instead of guessing."""
    schedule = sigmas(comfy, tiny_model, "SD1.5 5-step")
    model, records = record_backbone(tiny_model, lambda m: timed_freeu(comfy, m, (1.5, 1.1, 0.9, 0.2), steps=(2, 3)))
    if comfy.current:
        sample(comfy, model, core_sampler(comfy, "euler"), schedule, conds)
        assert backbone_factor_by_step(records, schedule) == {1: 1.0, 2: 1.5, 3: 1.5, 4: 1.0, 5: 1.0}
    else:
        with pytest.raises(RuntimeError, match="needs the sampling schedule"):
            sample(comfy, model, core_sampler(comfy, "euler"), schedule, conds)


def test_timed_freeu_validation_and_non_unet_models(comfy, tiny_model, caplog):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["TimedFreeU"]
    assert cls.VALIDATE_INPUTS("v1", 0, -1, 0.0, 1.0).startswith("first_step = 0 is out of range")
    assert "version = 'v3'" in cls.VALIDATE_INPUTS("v3", 1, -1, 0.0, 1.0)
    assert "start_percent = 0.6 must not be above end_percent = 0.4" in cls.VALIDATE_INPUTS("v1", 1, -1, 0.6, 0.4)
    assert cls.VALIDATE_INPUTS("v2", -3, -1, 0.0, 1.0) is True
    assert cls.VALIDATE_INPUTS("v1", 4, 2, 0.0, 1.0).startswith("first_step = 4 is after last_step = 2: the window "
                                                                 "selects no step")
    assert cls.VALIDATE_INPUTS("v1", -1, -3, 0.0, 1.0).startswith("first_step = -1 is after last_step = -3")
    assert cls.VALIDATE_INPUTS("v1", 5, -3, 0.0, 1.0) is True  # mixed signs: empty or not depends on the schedule
    with pytest.raises(ValueError, match="Timed FreeU: first_step = 4 is after last_step = 2"):
        timed_freeu(comfy, tiny_model, steps=(4, 2))
    with pytest.raises(ValueError, match="Timed FreeU: last_step = 500"):
        timed_freeu(comfy, tiny_model, steps=(1, 500))
    cascade = _tiny_stable_cascade()
    with caplog.at_level(logging.WARNING, logger="ComfyUI-FewStep"):
        assert timed_freeu(comfy, cascade) is cascade  # passed through: workflows stay shareable
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "StableCascade_C" in warnings[0] and "no UNet decoder" in warnings[0]


def _tiny_stable_cascade():
    """A real Stable Cascade stage C (a model without a UNet decoder), tiny, in both versions."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = {"stable_cascade_stage": "c", "c_in": 4, "c_out": 4, "c_r": 8, "c_cond": 32, "c_hidden": [32, 32],
              "nhead": [2, 2], "blocks": [[1, 1], [1, 1]], "block_repeat": [[1, 1], [1, 1]],
              "c_clip_text": 32, "c_clip_text_pooled": 32, "c_clip_img": 32, "c_clip_seq": 1}
    model = comfy.supported_models.Stable_Cascade_C(config).get_model({})
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


# --- KSampler registration ----------------------------------------------------------------------

def dropdowns(comfy):
    required = comfy.nodes.KSampler.INPUT_TYPES()["required"]
    return required["sampler_name"][0], required["scheduler"][0]


def test_registered_names_appear_once_in_ksampler(comfy):
    samplers, schedulers = dropdowns(comfy)
    assert samplers.count("fewstep_dpmpp_1s") == 1 and samplers.count("fewstep_dpmpp_2m") == 1
    assert schedulers.count("fewstep") == 1
    assert samplers is comfy.samplers.SAMPLER_NAMES and schedulers is comfy.samplers.SCHEDULER_NAMES


def ksampler(comfy, model, conds, sampler_name, scheduler, steps, denoise=1.0, seed=7):
    with torch.no_grad():
        return comfy.nodes.KSampler().sample(model, seed, steps, 5.5, sampler_name, scheduler, conds[0], conds[1],
                                             latent(), denoise=denoise)[0]["samples"]


@pytest.mark.parametrize("name, solver, steps", [("fewstep_dpmpp_1s", "dpmpp_1s", 5),
                                                 ("fewstep_dpmpp_2m", "dpmpp_2m", 8)])
def test_ksampler_runs_the_method(comfy, tiny_model, conds, name, solver, steps):
    counted, calls = count_evaluations(tiny_model)
    via_ksampler = ksampler(comfy, counted, conds, name, "fewstep", steps)
    schedule = recipe_sigmas(recipe_for_step_count(steps), standard_sigma_table())
    via_custom, _ = sample(comfy, tiny_model, fewstep_sampler(comfy, solver), schedule, conds)
    assert len(calls) == steps
    torch.testing.assert_close(via_ksampler, via_custom, rtol=1e-5, atol=1e-5)


def test_ksampler_denoise_below_one(comfy, tiny_model, conds):
    counted, calls = count_evaluations(tiny_model)
    out = ksampler(comfy, counted, conds, "fewstep_dpmpp_1s", "fewstep", 5, denoise=0.5)
    tail = recipe_sigmas(recipe_for_step_count(10), standard_sigma_table())[-6:]  # KSampler: int(5 / 0.5) steps, last 5
    assert len(calls) == 5 and calls[0] == pytest.approx(float(tail[0]), rel=1e-5)
    assert torch.isfinite(out).all()
    # and a core scheduler with our sampler works too (a schedule that ends at zero)
    calls.clear()
    assert torch.isfinite(ksampler(comfy, counted, conds, "fewstep_dpmpp_2m", "karras", 6)).all() and len(calls) == 6


def test_registration_is_idempotent_and_shares_lists_with_other_packs(comfy, tiny_model, conds):
    samplers_module = comfy.samplers
    sampler_list, scheduler_list = dropdowns(comfy)
    # another pack registered before us (simulated by registering ourselves again after it) ...
    sampler_list.append("otherpack_sampler")
    restore = samplers_module.calculate_sigmas_scheduler if not comfy.current else None
    try:
        setattr(samplers_module.k_diffusion_sampling, "sample_otherpack_sampler",
                getattr(samplers_module.k_diffusion_sampling, "sample_euler"))
        comfy.pack.nodes.registration.register()
        assert comfy.run(comfy.nodes.load_custom_node(str(comfy.pack_dir)))  # the loader again: nothing twice
        # ... and another after us, in the way each version allows
        if comfy.current:
            samplers_module.SCHEDULER_HANDLERS["otherpack_scheduler"] = samplers_module.SCHEDULER_HANDLERS["karras"]
        else:
            wrapped = samplers_module.calculate_sigmas_scheduler

            def other(model, name, steps):
                return wrapped(model, "karras" if name == "otherpack_scheduler" else name, steps)
            samplers_module.calculate_sigmas_scheduler = other
        scheduler_list.append("otherpack_scheduler")
        comfy.pack.nodes.registration.register()

        samplers, schedulers = dropdowns(comfy)
        assert samplers is sampler_list and schedulers is scheduler_list  # never rebound
        for name in ("fewstep_dpmpp_1s", "fewstep_dpmpp_2m", "otherpack_sampler"):
            assert samplers.count(name) == 1
        assert schedulers.count("fewstep") == 1 and schedulers.count("otherpack_scheduler") == 1
        # everyone's names still work
        counted, calls = count_evaluations(tiny_model)
        ksampler(comfy, counted, conds, "otherpack_sampler", "fewstep", 5)
        ksampler(comfy, counted, conds, "fewstep_dpmpp_1s", "otherpack_scheduler", 4)
        assert calls[0] == pytest.approx(14.6146, rel=1e-4) and len(calls) == 9
        fifth = float(recipe_sigmas(RECIPES["SD1.5 5-step"], standard_sigma_table())[4])
        assert calls[4] == pytest.approx(fifth, rel=1e-5)
    finally:
        sampler_list.remove("otherpack_sampler")
        if "otherpack_scheduler" in scheduler_list:
            scheduler_list.remove("otherpack_scheduler")
        if comfy.current:
            samplers_module.SCHEDULER_HANDLERS.pop("otherpack_scheduler", None)
        else:
            samplers_module.calculate_sigmas_scheduler = restore


def test_percent_to_sigma_is_comfyuis(comfy, tiny_model):
    """fewstep.window.percent_to_sigma (used by the schedule preview) against the model's own mapping."""
    from fewstep.schedule import standard_sigma_table
    from fewstep.window import percent_to_sigma

    ms = tiny_model.model.model_sampling
    table = standard_sigma_table().tolist()
    for percent in (0.001, 0.1, 0.2, 0.35, 0.5, 0.6, 0.8, 0.95, 0.999):
        assert percent_to_sigma(percent, table) == pytest.approx(float(ms.percent_to_sigma(percent)), rel=1e-5)
    assert percent_to_sigma(0.0, table) > 1e6 and float(ms.percent_to_sigma(0.0)) > 1e6
    assert percent_to_sigma(1.0, table) == float(ms.percent_to_sigma(1.0)) == 0.0


@pytest.mark.parametrize("recipe, window", [
    ("SD1.5 5-step", (1, -1, 0.35, 0.6)),
    ("SD1.5 5-step", (1, -1, 0.0, 0.5)),
    ("SD1.5 6-step", (2, 5, 0.2, 0.7)),
    ("SD1.5 6-step", (-3, -1, 0.0, 1.0)),
    ("SD1.5 8-step", (3, 8, 0.4, 1.0)),
])
def test_preview_freeu_steps_are_where_timed_freeu_acts(comfy, tiny_model, conds, recipe, window):
    """The steps the graph editor shades for a Timed FreeU (GET /fewstep/schedule, in process) are
    exactly the steps at which the real node changes the UNet's backbone features."""
    import importlib

    routes = importlib.import_module(f"{comfy.pack.__name__}.nodes.routes")
    query = {"recipe": recipe, "denoise": "1.0", "steps": "5", "base_steps": "8", "base_rho": "5.0",
             "end_index": "6", "time_rho": "1.2", "freeu": [",".join(str(v) for v in window)]}
    status, reply = routes.schedule_reply(query)
    assert status == 200, reply
    first, last, start, end = window
    assert reply["freeu"][0] | {"steps": None} == {"first_step": first, "last_step": last, "start_percent": start,
                                                   "end_percent": end, "steps": None}
    schedule = sigmas(comfy, tiny_model, recipe)
    model, records = record_backbone(
        tiny_model, lambda m: timed_freeu(comfy, m, (1.5, 1.1, 0.9, 0.2), steps=(first, last), percent=(start, end)))
    sample(comfy, model, fewstep_sampler(comfy, "dpmpp_2m"), schedule, conds)
    acted = [step for step, factor in backbone_factor_by_step(records, schedule).items() if factor == 1.5]
    assert reply["freeu"][0]["steps"] == acted
    assert 0 < len(acted) < len(schedule) - 1 or window[2:] == (0.0, 1.0)  # the windows really cut
