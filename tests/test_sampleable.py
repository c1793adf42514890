"""Every schedule Few-Step Sigmas accepts can be sampled (issue 11, part 6).

A seeded random sweep over every widget's whole declared range (read from the node's INPUT_TYPES)
plus the corners: for each input, either the node's validation rejects it with a message that
names an input, or its schedule is finite, positive, strictly descending in float32 and samples
with both solvers (a cheap exact denoiser: Gaussian data) in N evaluations, on the standard table
and on the tables of real ModelSamplingDiscrete patches (v-prediction + zero-terminal SNR, lcm),
where the node checks again. A smaller set goes through the real node, route and sampler.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import re

import numpy as np
import pytest
import torch
from conftest import count_evaluations
from test_comfy_nodes import core_sampler, fewstep_sampler, ksampler, sample

from fewstep.params import ScheduleParams, format_params
from fewstep.schedule import schedule_problem, standard_sigma_table
from fewstep.solvers import SOLVERS, sample_fewstep

DRAWS = 1500
TABLE = standard_sigma_table()


def module(comfy, name):
    return importlib.import_module(f"{comfy.pack.__name__}.nodes.{name}")


@pytest.fixture(scope="module")
def widgets(comfy):
    """name -> (type, options) of the node's widget inputs, from its INPUT_TYPES (as the route reads them)."""
    return {name: (kind, options) for name, (kind, options, _) in module(comfy, "routes").widget_inputs().items()}


def gaussian_denoiser(calls):
    """The exact D(x, sigma) for data ~ N(0, I): x / (1 + sigma^2)."""
    def denoiser(x, sigma, **extra):
        calls.append(float(sigma[0]))
        return x / (1.0 + sigma.view(-1, 1) ** 2)
    return denoiser


def draw(rng, widgets) -> dict:
    """One input over the declared ranges: ints uniform, floats half uniform and half log-uniform (small rho,
    time_rho and denoise are where schedules crowd), end_index often inside 1..base_steps-1, and for about a
    fifth of the custom inputs a params string with a ramp (even, random, or crowded near 0 or 1)."""
    inputs = {}
    for name, (kind, options) in widgets.items():
        if isinstance(kind, (list, tuple)):
            inputs[name] = "custom" if rng.random() < 0.7 else str(rng.choice(kind))
        elif kind == "INT":
            inputs[name] = int(rng.integers(options["min"], options["max"] + 1))
        elif kind == "FLOAT":
            low, high = options["min"], options["max"]
            inputs[name] = float(rng.uniform(low, high) if rng.random() < 0.5
                                 else math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            inputs[name] = options.get("default", "")
    if rng.random() < 0.6:
        inputs["end_index"] = int(inputs["base_steps"] - 1 if rng.random() < 0.3
                                  else rng.integers(1, inputs["base_steps"]))
    if inputs["recipe"] == "custom" and rng.random() < 0.2:
        steps = inputs["steps"]
        kind = rng.integers(4)
        if kind == 0 or steps < 2:
            ramp = None
        elif kind == 1:
            ramp = tuple(np.sort(rng.uniform(0, 1, steps - 1)).tolist())
        else:
            edge = 10.0 ** rng.uniform(-7, -1)
            values = np.sort(rng.uniform(0, edge, steps - 1))
            ramp = tuple((values if kind == 2 else 1.0 - values[::-1]).tolist())
        params = ScheduleParams(steps, inputs["base_steps"], inputs["base_rho"], inputs["end_index"],
                                inputs["time_rho"], ramp)
        inputs["params"] = format_params(params)
    return inputs


def corners(widgets) -> list[dict]:
    """Every combination of each numeric widget at its min or max (end_index also at 1 and base_steps - 1),
    for `custom`; and every named recipe at the denoise extremes."""
    numeric = [name for name, (kind, _) in widgets.items() if kind in ("INT", "FLOAT")]
    found = []
    for values in itertools.product(*[(widgets[n][1]["min"], widgets[n][1]["max"]) for n in numeric]):
        base = {"recipe": "custom", "params": "", **dict(zip(numeric, values))}
        found.append(base)
        found.append({**base, "end_index": base["base_steps"] - 1})
    for recipe in widgets["recipe"][0]:
        for denoise in (widgets["denoise"][1]["min"], widgets["denoise"][1]["max"]):
            found.append({**found[0], "recipe": recipe, "denoise": denoise})
    return found


def call(function, inputs):
    accepted = inspect.signature(function).parameters
    return function(**{name: value for name, value in inputs.items() if name in accepted})


NAMES_AN_INPUT = re.compile(r"(^|\W)(recipe|denoise|steps|base_steps|base_rho|end_index|time_rho|params) = "
                            r"|^params: ")


def check_sampleable(sigmas: torch.Tensor, steps: int) -> None:
    """Finite, positive, strictly descending in float32, and both solvers run N evaluations to a finite latent."""
    assert sigmas.dtype == torch.float32 and len(sigmas) == steps + 1
    assert torch.isfinite(sigmas).all() and float(sigmas[-1]) > 0 and bool((sigmas[1:] < sigmas[:-1]).all())
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    for solver in SOLVERS:
        calls = []
        out = sample_fewstep(gaussian_denoiser(calls), x, sigmas, disable=True, solver=solver)
        assert len(calls) == steps and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def patched_models(comfy, tiny_model):
    """The node's model input on three real ModelSamplingDiscrete patches."""
    patch = comfy.model_advanced.ModelSamplingDiscrete().patch
    return {f"{sampling}{' zsnr' if zsnr else ''}": patch(tiny_model, sampling, zsnr)[0]
            for sampling, zsnr in (("eps", False), ("v_prediction", True), ("lcm", False))}


def test_every_accepted_input_can_be_sampled(comfy, widgets, patched_models):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    sigmas_module = module(comfy, "sigmas")
    rng = np.random.default_rng(20261201)
    cases = corners(widgets) + [draw(rng, widgets) for _ in range(DRAWS)]
    tally = {"accepted": 0, "out of range": 0, "cannot be sampled": 0, "params": 0}
    on_model = {name: 0 for name in patched_models}
    for inputs in cases:
        verdict = call(cls.VALIDATE_INPUTS, inputs)
        if verdict is not True:
            assert isinstance(verdict, str) and NAMES_AN_INPUT.search(verdict), (inputs, verdict)
            key = ("cannot be sampled" if "cannot be sampled" in verdict else
                   "params" if verdict.startswith("params: ") else "out of range")
            tally[key] += 1
            if key == "cannot be sampled":
                assert "not lower sigma by at least 0.01 %" in verdict and "use fewer steps" in verdict
            continue
        tally["accepted"] += 1
        sigmas = call(sigmas_module.sigmas_plan, {"sigma_table": TABLE, **inputs}).sigmas
        steps = len(sigmas) - 1
        check_sampleable(sigmas, steps)
        # on the model's own table the node checks again: it refuses naming the inputs, or it samples
        for name, model in patched_models.items():
            try:
                on_table = call(cls().get_sigmas, {"model": model, **inputs})[0]
            except ValueError as error:
                assert "cannot be sampled on this model's noise schedule" in str(error), (inputs, error)
                assert NAMES_AN_INPUT.search(str(error))
                on_model[name] += 1
                continue
            check_sampleable(on_table, steps)
    print(f"{len(cases)} inputs: {tally}; accepted on the standard table but refused on: {on_model}")
    # the sweep reached every outcome, and mostly valid inputs
    assert tally["accepted"] > len(cases) / 3 and tally["cannot be sampled"] >= 10
    assert tally["out of range"] > 0 and on_model["lcm"] > 0


def test_the_issue_example_is_refused_everywhere_naming_its_inputs(comfy, tiny_model):
    """steps 100, base_steps 3, base_rho 1.0, end_index 2, time_rho 10: refused by VALIDATE_INPUTS, the node
    and the route with one message, which names the inputs and says why."""
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    verdict = cls.VALIDATE_INPUTS("custom", 100, 3, 1.0, 2, 10.0, 1.0)
    assert verdict.startswith("steps = 100, base_steps = 3, base_rho = 1.0, end_index = 2, time_rho = 10.0 and "
                              "denoise = 1.0 give a schedule that cannot be sampled: steps 78 to 100 of 100 do not "
                              "lower sigma by at least 0.01 %")
    with pytest.raises(ValueError) as raised:
        cls().get_sigmas(tiny_model, "custom", 1.0, 100, 3, 1.0, 2, 10.0)
    assert str(raised.value) == f"Few-Step Sigmas: {verdict}"
    query = dict(recipe="custom", denoise="1.0", steps="100", base_steps="3", base_rho="1.0", end_index="2",
                 time_rho="10")
    status, body = module(comfy, "routes").schedule_reply(query)
    assert status == 400 and body == {"error": f"Few-Step Sigmas: {verdict}"}
    # a params string that crowds its ramp: named as `params`
    text = "fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 ramp=0.2,0.200001,0.5,0.7"
    verdict = cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 1.0, params=text)
    assert verdict.startswith(f"params = {text!r} and denoise = 1.0 give a schedule that cannot be sampled: "
                              "step 2 of 5")


# Edge inputs the sweep accepts, few steps each, through the real node and the real UNet (both solvers).
ACCEPTED_EDGES = [
    dict(recipe="custom", denoise=0.01, steps=4, base_steps=200, base_rho=50.0, end_index=199, time_rho=0.1),
    dict(recipe="custom", denoise=0.01, steps=4, base_steps=2, base_rho=0.1, end_index=1, time_rho=0.1),
    dict(recipe="custom", denoise=1.0, steps=4, base_steps=200, base_rho=50.0, end_index=1, time_rho=10.0),
    dict(recipe="custom", denoise=0.01, steps=1, base_steps=200, base_rho=50.0, end_index=1, time_rho=10.0),
    dict(recipe="SDXL 8-step", denoise=0.01, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2),
]
REFUSED_EDGES = [  # the steps share too short a span; they crowd at an end of timestep 0
    dict(recipe="custom", denoise=1.0, steps=8, base_steps=200, base_rho=0.1, end_index=1, time_rho=0.1),
    dict(recipe="custom", denoise=1.0, steps=8, base_steps=2, base_rho=0.1, end_index=1, time_rho=10.0),
]


@pytest.mark.parametrize("inputs", ACCEPTED_EDGES)
def test_accepted_edges_sample_on_the_real_unet(comfy, tiny_model, conds, inputs):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    assert call(cls.VALIDATE_INPUTS, inputs) is True
    sigmas = call(cls().get_sigmas, {"model": tiny_model, **inputs})[0]
    assert schedule_problem(sigmas) is None
    for solver in SOLVERS:
        counted, calls = count_evaluations(tiny_model)
        out, denoised = sample(comfy, counted, fewstep_sampler(comfy, solver), sigmas, conds)
        assert len(calls) == len(sigmas) - 1 and torch.isfinite(out).all() and torch.isfinite(denoised).all()


@pytest.mark.parametrize("inputs", REFUSED_EDGES)
def test_refused_edges_never_leave_the_node(comfy, tiny_model, inputs):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    verdict = call(cls.VALIDATE_INPUTS, inputs)
    assert "give a schedule that cannot be sampled" in verdict and verdict.startswith("steps = ")
    with pytest.raises(ValueError, match="^Few-Step Sigmas: steps = "):
        call(cls().get_sigmas, {"model": tiny_model, **inputs})
    status, body = module(comfy, "routes").schedule_reply({k: str(v) for k, v in inputs.items()})
    assert status == 400 and body["error"] == f"Few-Step Sigmas: {verdict}"


# --- our samplers refuse a SIGMAS input that cannot be sampled, from any node ---------------------------

BAD_SIGMAS = {
    "repeated": [14.6146, 1.0, 1.0, 0.1],
    "ascending": [0.1, 1.0, 14.6146],
    "step below 0.01 %": [14.6146, 1.0, 0.99995, 0.1],
    "not finite": [14.6146, float("nan"), 0.1],
    "zero inside": [14.6146, 0.0, 0.0],
}


@pytest.mark.parametrize("how", ["Few-Step DPM++ Sampler", "KSamplerSelect"])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", list(BAD_SIGMAS))
def test_our_samplers_refuse_sigmas_that_cannot_be_sampled(comfy, tiny_model, conds, how, solver, kind):
    sampler = fewstep_sampler(comfy, solver) if how == "Few-Step DPM++ Sampler" else \
        core_sampler(comfy, f"fewstep_{solver}")
    counted, calls = count_evaluations(tiny_model)
    with pytest.raises(ValueError, match=r"^Few-Step DPM\+\+ Sampler \(" + solver + r"; on KSampler: fewstep_"
                       + solver + r"\): the SIGMAS input cannot be sampled: .* a last sigma of 0 is fine\)\.$"):
        sample(comfy, counted, sampler, torch.tensor(BAD_SIGMAS[kind]), conds)
    assert calls == []  # refused before any model evaluation


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_trailing_zero_from_other_nodes_still_works(comfy, tiny_model, conds, solver):
    counted, calls = count_evaluations(tiny_model)
    out, _ = sample(comfy, counted, fewstep_sampler(comfy, solver), torch.tensor([14.6146, 2.0, 0.5, 0.0]), conds)
    assert len(calls) == 3 and torch.isfinite(out).all()
    calls.clear()  # and KSampler with a core scheduler (ends at 0) and our sampler
    assert torch.isfinite(ksampler(comfy, counted, conds, f"fewstep_{solver}", "karras", 3)).all() and len(calls) == 3


def test_fewstep_scheduler_refuses_absurd_step_counts(comfy, tiny_model):
    """KSampler asks the scheduler for steps / denoise steps; at 100000 the steps near t = 999 fall below 0.01 %."""
    comfy_api = module(comfy, "comfy_api")
    ms = tiny_model.model.model_sampling
    assert schedule_problem(comfy_api.fewstep_scheduler(ms, 10000)) is None
    with pytest.raises(ValueError, match=r"^fewstep scheduler: 100000 steps \(KSampler's steps / denoise\) give a "
                                         r"schedule that cannot be sampled: .* Use fewer steps or a larger denoise\.$"):
        comfy_api.fewstep_scheduler(ms, 100000)


def test_tuner_counts_only_sampleable_schedules():
    from fewstep.tuner import valid_schedule

    assert valid_schedule(torch.tensor([14.6, 2.0, 0.5]), 2)
    assert not valid_schedule(torch.tensor([14.6, 2.0, 2.0 * (1 - 5e-5)]), 2)
    assert not valid_schedule(torch.tensor([14.6, 2.0, 0.5]), 3)


def test_route_warns_about_a_timed_freeu_window_that_selects_no_step(comfy):
    """The schedule graph's reply: `steps` is empty and a `warning` says why; a window of the same sign in
    reverse order is refused like Timed FreeU refuses it."""
    routes = module(comfy, "routes")
    query = dict(recipe="SD1.5 5-step", denoise="1.0", steps="5", base_steps="8", base_rho="5", end_index="6",
                 time_rho="1.2")
    status, body = routes.schedule_reply({**query, "freeu": ["5,-3", "2,4", "-2,3"]})
    assert status == 200
    empty, fine, mixed = body["freeu"]
    assert empty["steps"] == [] and empty["warning"] == (
        "Timed FreeU: first_step = 5 and last_step = -3 select no step of this 5-step schedule (they resolve to steps "
        "5 to 3), so this Timed FreeU does nothing")
    assert fine["steps"] == [2, 3, 4] and "warning" not in fine
    assert mixed["steps"] == [] and "select no step of this 5-step schedule" in mixed["warning"]
    status, body = routes.schedule_reply({**query, "recipe": "SD1.5 8-step", "freeu": ["5,-3"]})
    assert status == 200 and body["freeu"][0]["steps"] == [5, 6] and "warning" not in body["freeu"][0]
    status, body = routes.schedule_reply({**query, "freeu": ["4,2"]})
    assert status == 400 and body["error"].startswith("freeu: first_step = 4 is after last_step = 2")
