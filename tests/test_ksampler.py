"""Few-Step KSampler: the whole recipe in one node, bit-identical to the five-node graph, on the tiny real UNet."""

from __future__ import annotations

import pytest
import torch
from conftest import conditioning, count_evaluations, latent

from fewstep.params import ScheduleParams, format_params
from fewstep.recipes import CUSTOM, DEFAULT_CUSTOM, RECIPES

SEED, CFG = 42, 5.5


def node(comfy, node_id):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def five_node_graph(comfy, model, recipe, freeu=True, denoise=1.0, params="", solver=None, freeu_settings=None):
    """Few-Step Sigmas -> Few-Step DPM++ / UniPC Sampler, Timed FreeU per FreeU setting -> SamplerCustom, wired by
    hand as a user would (values from the recipe table, not from the KSampler node)."""
    c = DEFAULT_CUSTOM
    sigmas = node(comfy, "FewStepSigmas").get_sigmas(model, recipe, denoise, c.steps, c.base_steps, c.base_rho,
                                                     c.end_index, c.time_rho, params=params)[0]
    solver = solver or RECIPES[recipe].solver
    named = RECIPES.get(recipe)  # a tuned recipe (the flow ones) names its UniPC variant and order
    variant, order = (named.variant, named.order) if named is not None else (None, None)
    if solver in ("dpmpp_1s", "dpmpp_2m"):
        sampler = node(comfy, "FewStepDPMPPSampler").get_sampler(solver, "last_sigma")[0]
    else:
        sampler = node(comfy, "FewStepUniPCSampler").get_sampler(order or "auto", variant or "bh1",
                                                                 solver == "unipc_afs", "last_sigma", "noise")[0]
    patched = model
    settings = RECIPES[recipe].freeu if freeu_settings is None else freeu_settings
    for s in settings if freeu else ():
        patched = node(comfy, "TimedFreeU").patch(patched, s.b1, s.b2, s.s1, s.s2, "v1", s.first_step,
                                                  s.last_step, 0.0, 1.0)[0]
    out, denoised = comfy.custom_sampler.SamplerCustom().sample(patched, True, SEED, CFG, conds()[0], conds()[1],
                                                                sampler, sigmas, latent(8))
    return out["samples"], denoised["samples"]


def conds():
    return conditioning(1), conditioning(2)


def ksampler(comfy, model, recipe, freeu="recipe", denoise=1.0, params=""):
    out, denoised = node(comfy, "FewStepKSampler").sample(model, SEED, CFG, recipe, freeu, conds()[0], conds()[1],
                                                          latent(8), denoise, params)
    return out["samples"], denoised["samples"]


def test_declaration(comfy):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS["FewStepKSampler"] == "Few-Step KSampler"
    assert cls.CATEGORY == "sampling" and cls.RETURN_TYPES == ("LATENT", "LATENT")
    inputs = cls.INPUT_TYPES()
    assert list(inputs["required"]) == ["model", "seed", "cfg", "recipe", "freeu", "positive", "negative",
                                        "latent_image", "denoise"]
    assert inputs["required"]["seed"][1]["control_after_generate"] is True
    assert inputs["required"]["recipe"][0] == [*RECIPES, CUSTOM]  # every named recipe, DPM++ and UniPC
    assert inputs["required"]["freeu"][0] == ["recipe", "off"]
    assert list(inputs["optional"]) == ["params"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_bit_identical_to_the_five_node_graph(comfy, tiny_model, name):
    ours = ksampler(comfy, tiny_model, name)
    graph = five_node_graph(comfy, tiny_model, name)
    assert torch.equal(ours[0], graph[0]) and torch.equal(ours[1], graph[1])
    assert torch.isfinite(ours[0]).all()
    if RECIPES[name].freeu:  # the recipe's FreeU really acts: without it the result differs
        plain = five_node_graph(comfy, tiny_model, name, freeu=False)
        assert not torch.equal(ours[0], plain[0])
        assert torch.equal(ksampler(comfy, tiny_model, name, freeu="off")[0], plain[0])


def test_img2img_and_tuned_params_are_identical_too(comfy, tiny_model):
    assert all(torch.equal(a, b) for a, b in zip(ksampler(comfy, tiny_model, "SD1.5 5-step", denoise=0.6),
                                                 five_node_graph(comfy, tiny_model, "SD1.5 5-step", denoise=0.6)))
    for solver in ("dpmpp_2m", "unipc_afs"):
        text = format_params(ScheduleParams(6, 8, 5.5, 6, 1.3, (0.15, 0.3, 0.5, 0.7, 0.85), solver))
        ours = ksampler(comfy, tiny_model, CUSTOM, params=text)
        graph = five_node_graph(comfy, tiny_model, CUSTOM, params=text, solver=solver, freeu_settings=())
        assert torch.equal(ours[0], graph[0]) and torch.equal(ours[1], graph[1])


@pytest.mark.parametrize("solver", ["dpmpp_1s", "unipc_afs"])
def test_end_zero_params_sample_to_sigma_zero_in_n_evaluations(comfy, tiny_model, solver):
    text = f"fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 solver={solver} end=0"
    model, calls = count_evaluations(tiny_model)
    ours = ksampler(comfy, model, CUSTOM, params=text)
    assert len(calls) == 5
    graph = five_node_graph(comfy, tiny_model, CUSTOM, params=text, solver=solver, freeu_settings=())
    assert torch.equal(ours[0], graph[0]) and torch.equal(ours[1], graph[1])
    early = ksampler(comfy, tiny_model, CUSTOM, params=text.replace(" end=0", ""))
    assert torch.isfinite(ours[0]).all() and not torch.equal(ours[0], early[0])


@pytest.mark.parametrize("name", ["SD1.5 5-step", "SD1.5 8-step", "SDXL 6-step UniPC"])
def test_evaluates_the_model_exactly_n_times(comfy, tiny_model, name):
    model, calls = count_evaluations(tiny_model)
    ksampler(comfy, model, name)
    assert len(calls) == RECIPES[name].steps


def test_bad_inputs_get_the_same_messages_as_few_step_sigmas(comfy, tiny_model):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]
    sigmas = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    c = DEFAULT_CUSTOM
    for recipe, denoise, params in (("SD1.5 4-step", 1.0, ""), ("SD1.5 5-step", 0.0, ""),
                                    (CUSTOM, 1.0, "fewstep v1: steps=5")):
        expected = sigmas.VALIDATE_INPUTS(recipe, c.steps, c.base_steps, c.base_rho, c.end_index, c.time_rho,
                                          denoise, params)
        assert isinstance(expected, str) and cls.VALIDATE_INPUTS(recipe, "recipe", denoise, params) == expected
        with pytest.raises(ValueError, match="^Few-Step KSampler: "):
            ksampler(comfy, tiny_model, recipe, denoise=denoise, params=params)
    assert "freeu = 'on' is not one of ['recipe', 'off']" == cls.VALIDATE_INPUTS("SD1.5 5-step", "on", 1.0, "")
    assert cls.VALIDATE_INPUTS(CUSTOM, "recipe", 1.0, None) is True  # params linked: checked when it runs
    with pytest.raises(ValueError, match=r"Few-Step KSampler: recipe = 'custom' needs a schedule in `params`"):
        ksampler(comfy, tiny_model, CUSTOM, params="")


def test_progress_bar_previews_and_cancel(comfy, tiny_model):
    """ComfyUI's progress bar gets one update per evaluation (N of N at the end); the server's hook is where a
    cancelled prompt stops (it calls throw_exception_if_processing_interrupted), between two evaluations."""
    import comfy.model_management as mm
    import comfy.utils as comfy_utils

    updates = []
    previous = comfy_utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, *rest, **named):
        updates.append((value, total))
        mm.throw_exception_if_processing_interrupted()

    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        ksampler(comfy, tiny_model, "SD1.5 6-step")
        assert updates[-1] == (6, 6) and [v for v, _ in updates] == list(range(1, 7))

        model, calls = count_evaluations(tiny_model)
        updates.clear()

        def cancel_after_two(value, total, preview, *rest, **named):
            if value == 2:
                mm.interrupt_current_processing(True)
            hook(value, total, preview)

        comfy_utils.set_progress_bar_global_hook(cancel_after_two)
        with pytest.raises(mm.InterruptProcessingException):
            ksampler(comfy, model, "SD1.5 6-step")
        assert len(calls) == 2
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
