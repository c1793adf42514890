"""The plan (fewstep/plan.py): one request made and checked once. Pure: no ComfyUI, no model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fewstep.params import ScheduleParams, format_params, parse_params
from fewstep.plan import (
    FREEU_CHOICES,
    FreeUWindow,
    PlanError,
    Solver,
    dpmpp_solver,
    freeu_window,
    make_plan,
    plan_problem,
    solver_named,
    steps_plan,
    unipc_solver,
)
from fewstep.recipes import CUSTOM, RECIPES, recipe_for_step_count
from fewstep.sampling import sample, sample_solver
from fewstep.schedule import STANDARD_TABLE, recipe_sigmas, standard_sigma_table
from fewstep.solvers import sample_fewstep
from fewstep.unipc import sample_unipc

CUSTOM_WIDGETS = ScheduleParams(5, 8, 5.0, 6, 1.2)
BARE = "fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2"


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_named_recipe_plans_its_own_sigmas_solver_and_freeu(name):
    recipe = RECIPES[name]
    plan = make_plan(name, custom=ScheduleParams(3, 4, 1.0, 2, 1.0))  # named recipes ignore the custom widgets
    assert torch.equal(plan.sigmas, recipe_sigmas(recipe, standard_sigma_table()))
    assert plan.nfe == recipe.steps and plan.schedule == ScheduleParams.from_recipe(recipe)
    unipc = {"variant": recipe.variant or "bh1", "order": recipe.order or "auto"}  # a tuned (flow) recipe names them
    expected = {"dpmpp_1s": Solver("dpmpp_1s"), "dpmpp_2m": Solver("dpmpp_2m"), "unipc": Solver("unipc", **unipc),
                "unipc_afs": Solver("unipc", afs=True, **unipc)}[recipe.solver]
    assert plan.solver == expected and plan.solver.schedule_solver == recipe.solver
    assert [(f.b1, f.b2, f.s1, f.s2, f.first_step, f.last_step) for f in plan.freeu] == \
        [(f.b1, f.b2, f.s1, f.s2, f.first_step, f.last_step) for f in recipe.freeu]
    assert all(f.version == "v1" and (f.start_percent, f.end_percent) == (0.0, 1.0) for f in plan.freeu)
    assert make_plan(name, freeu="off").freeu == ()
    half = make_plan(name, denoise=0.5)
    assert torch.equal(half.sigmas, recipe_sigmas(recipe, standard_sigma_table(), 0.5))
    assert half.sigmas[0] < plan.sigmas[0]


def test_a_params_text_plans_its_schedule_and_solver():
    text = format_params(ScheduleParams(6, 8, 5.5, 6, 1.3, (0.15, 0.3, 0.5, 0.7, 0.85), "unipc_afs"))
    plan = make_plan(CUSTOM, params=text, custom=CUSTOM_WIDGETS)  # the text replaces the custom widgets
    assert plan.schedule == parse_params(text) and torch.equal(plan.sigmas, parse_params(text).sigmas(STANDARD_TABLE))
    assert plan.solver == Solver("unipc", afs=True) and plan.freeu == ()  # custom: no recipe FreeU
    # Without a solver field: the solver of the recipe family the ``fewstep`` scheduler uses for that step count.
    for steps, solver in ((5, "dpmpp_1s"), (8, "dpmpp_2m")):
        bare = f"fewstep v1: steps={steps} base_steps=12 base_rho=7 end_index=9 time_rho=1.2"
        assert make_plan(CUSTOM, params=bare).solver == Solver(solver) == Solver(recipe_for_step_count(steps).solver)
    widgets = make_plan(CUSTOM, custom=CUSTOM_WIDGETS)
    assert torch.equal(widgets.sigmas, recipe_sigmas(RECIPES["SD1.5 5-step"], STANDARD_TABLE))
    assert widgets.schedule.solver is None  # the custom widgets name no solver (the route shows none)


def test_the_plan_is_immutable():
    plan = make_plan("SD1.5 5-step")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.denoise = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.solver.name = "dpmpp_2m"


@pytest.mark.parametrize("arguments, input_name, message", [
    (dict(recipe="SD2 4-step"), "recipe", "recipe = 'SD2 4-step' is not one of"),
    (dict(recipe="SD1.5 5-step", denoise=0.0), "denoise", "denoise = 0.0 is out of range: allowed 0.01 to 1.0"),
    (dict(recipe="SD1.5 5-step", freeu="on"), "freeu", "freeu = 'on' is not one of ['recipe', 'off']"),
    (dict(recipe=CUSTOM), "params", "recipe = 'custom' needs a schedule in `params`"),
    (dict(recipe=CUSTOM, params="fewstep v1: steps=5"), "params", "params: missing base_steps"),
    (dict(recipe=CUSTOM, params="steps=5"), "params", "params: 'steps=5' does not start with 'fewstep v1:'"),
    (dict(recipe=CUSTOM, custom=ScheduleParams(5, 8, 5.0, 8, 1.2)), "end_index",
     "end_index = 8 is out of range: allowed 1 to 7"),
    (dict(recipe=CUSTOM, custom=ScheduleParams(0, 8, 5.0, 6, 1.2)), "steps", "steps = 0 is out of range"),
    # 100 steps ending at the timestep of the 199th of 200 base sigmas with time_rho 10: the last ones crowd
    # below timestep 1, where each lowers sigma by less than 0.01 %
    (dict(recipe=CUSTOM, custom=ScheduleParams(100, 200, 0.1, 199, 10.0)), "steps",
     "steps = 100, base_steps = 200, base_rho = 0.1, end_index = 199, time_rho = 10.0 and denoise = 1.0 give a "
     "schedule that cannot be sampled: steps 78 to "),
    (dict(recipe=CUSTOM, params=BARE + " end=1"), "params", "params: end = '1' is not one of ['index', '0']"),
    (dict(recipe=CUSTOM, params=BARE + " solver=dpmpp_2m variant=bh2"), "params",
     "params: variant = bh2 refines UniPC: it needs solver = unipc or unipc_afs"),
    (dict(recipe=CUSTOM, params=BARE + " solver=unipc order=4"), "params",
     "params: order = '4' is not one of ['auto', '1', '2', '3']"),
])
def test_bad_input_raises_one_error_that_names_it(arguments, input_name, message):
    looked_at = []

    def table():
        looked_at.append(True)
        return STANDARD_TABLE

    with pytest.raises(PlanError) as raised:
        make_plan(**{"sigma_table": table, **arguments})
    assert raised.value.input == input_name and str(raised.value).startswith(message), str(raised.value)
    assert isinstance(raised.value, ValueError) and not looked_at  # named before the model is looked at
    assert plan_problem(**{k: v for k, v in arguments.items()}) == str(raised.value)


def test_a_table_where_the_schedule_collapses_is_refused_naming_the_inputs():
    # A table with no sigma below that of timestep 300 (lcm sampling has none below timestep 19): the recipe's
    # last steps repeat it.
    table = STANDARD_TABLE.clone()
    table[:300] = table[300]
    with pytest.raises(PlanError) as raised:
        make_plan("SD1.5 5-step", sigma_table=lambda: table)
    text = str(raised.value)
    assert raised.value.input == "recipe"
    assert text.startswith("recipe = 'SD1.5 5-step' and denoise = 1.0 give a schedule that cannot be sampled on this "
                           "model's noise schedule (sigma 0.8328 to 14.61): step 5 of 5 does not lower sigma")
    assert "This model has no sigma below" in text
    assert plan_problem("SD1.5 5-step") is None  # on the standard table the same inputs are fine


def test_a_linked_params_is_checked_when_it_arrives():
    assert plan_problem(CUSTOM, 1.0, None) is None  # linked: the schedule is not known yet
    assert plan_problem(CUSTOM, 2.0, None) == "denoise = 2.0 is out of range: allowed 0.01 to 1.0"
    assert plan_problem(CUSTOM, 1.0, None, freeu="x").startswith("freeu = 'x'")
    assert plan_problem("SD1.5 5-step", 1.0, None) is None  # a named recipe ignores it: checked in full
    assert plan_problem("SD1.5 5-step", 0.0, None).startswith("denoise = 0.0")


def test_solvers_from_node_inputs_and_names():
    assert dpmpp_solver("dpmpp_2m", "denoised") == Solver("dpmpp_2m", "denoised")
    assert unipc_solver("2", "bh2", True, "last_sigma", "data") == Solver("unipc", "last_sigma", "2", "bh2", True,
                                                                         "data")
    assert solver_named("unipc_afs") == unipc_solver("auto", "bh1", True, "last_sigma", "noise")
    for call, name in ((lambda: dpmpp_solver("euler", "last_sigma"), "solver"),
                       (lambda: dpmpp_solver("dpmpp_1s", "zero"), "finish"),
                       (lambda: unipc_solver("4", "bh1", False, "last_sigma"), "order"),
                       (lambda: unipc_solver("auto", "bh3", False, "last_sigma"), "variant"),
                       (lambda: unipc_solver("auto", "bh1", False, "last_sigma", "eps"), "prediction"),
                       (lambda: solver_named("euler"), "solver")):
        with pytest.raises(PlanError) as raised:
            call()
        assert raised.value.input == name and str(raised.value).startswith(f"{name} = ")
    assert Solver("unipc").label == "Few-Step UniPC Sampler (on KSampler: fewstep_unipc)"
    assert Solver("dpmpp_2m").label == "Few-Step DPM++ Sampler (dpmpp_2m; on KSampler: fewstep_dpmpp_2m)"


def test_freeu_windows_from_timed_freeu_inputs():
    assert freeu_window(1.1, 1.2, 0.9, 0.2, "v2", -3, -1, 0.1, 0.9) == FreeUWindow(1.1, 1.2, 0.9, 0.2, "v2", -3, -1,
                                                                                    0.1, 0.9)
    for inputs, name in (((1, 1, 1, 1, "v3", 1, -1, 0.0, 1.0), "version"),
                         ((1, 1, 1, 1, "v1", 0, -1, 0.0, 1.0), "first_step"),
                         ((1, 1, 1, 1, "v1", 4, 2, 0.0, 1.0), "first_step"),
                         ((1, 1, 1, 1, "v1", 1, 101, 0.0, 1.0), "last_step"),
                         ((1, 1, 1, 1, "v1", 1, -1, 0.5, 0.4), "start_percent"),
                         ((1, 1, 1, 1, "v1", 1, -1, 0.0, 1.5), "end_percent")):
        with pytest.raises(PlanError) as raised:
            freeu_window(*inputs)
        assert raised.value.input == name, str(raised.value)
    assert FREEU_CHOICES == ("recipe", "off")  # public: saved in workflows


def test_the_scheduler_plan_takes_any_step_count():
    for steps in (1, 5, 7, 8, 150):  # above the custom widgets' 100: KSampler asks for steps / denoise
        plan = steps_plan(steps, STANDARD_TABLE)
        family = recipe_for_step_count(steps)
        assert plan.nfe == steps and plan.solver == solver_named(family.solver)
        assert torch.equal(plan.sigmas, recipe_sigmas(family, STANDARD_TABLE))
    with pytest.raises(PlanError) as raised:
        steps_plan(100000, STANDARD_TABLE)
    assert raised.value.input == "steps" and "0.01 %" in str(raised.value)


class Toy:
    """A denoiser whose data prediction depends on x and sigma (so every solver's path shows)."""

    def __call__(self, x, sigma, **_):
        return torch.tanh(x) / (1.0 + sigma.view(-1, 1, 1, 1) ** 2) ** 0.5


@pytest.mark.parametrize("solver", [Solver("dpmpp_1s"), Solver("dpmpp_2m", "denoised"), Solver("unipc"),
                                    Solver("unipc", order="2", variant="bh2", afs=True, prediction="data")])
def test_sample_runs_the_plan_solver(solver):
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 14.6
    sigmas = make_plan("SD1.5 6-step").sigmas
    ours = sample(Toy(), x, sigmas, disable=True, solver=solver)
    if solver.unipc:
        straight = sample_unipc(Toy(), x, sigmas, disable=True, order=solver.order, variant=solver.variant,
                                afs=solver.afs, finish=solver.finish, prediction=solver.prediction)
    else:
        straight = sample_fewstep(Toy(), x, sigmas, disable=True, solver=solver.name, finish=solver.finish)
    assert torch.equal(ours, straight)
    assert torch.equal(sample_solver(Toy(), x, sigmas, disable=True, solver=solver.schedule_solver,
                                     finish=solver.finish),
                       sample(Toy(), x, sigmas, disable=True, solver=solver_named(solver.schedule_solver,
                                                                                  solver.finish)))


def test_end_zero_and_unipc_options_read_and_write_back():
    old = "fewstep v1: steps=6 base_steps=8 base_rho=5.5 end_index=6 time_rho=1.3 solver=unipc_afs"
    assert format_params(parse_params(old)) == old  # a text without the new keys reads and writes the same
    text = f"{BARE} solver=unipc_afs variant=bh2 order=2 end=0"
    params = parse_params(text)
    assert (params.variant, params.order, params.end, params.end_zero) == ("bh2", "2", "0", True)
    assert format_params(params) == text and parse_params(f"{BARE} end=index").end_zero is False
    assert make_plan(CUSTOM, params=text).solver == Solver("unipc", order="2", variant="bh2", afs=True)


def straight_dpmpp_2m(model, x, sigmas):
    """DPM++2M as RECIPES.md writes it (k-diffusion's form), with the last step to 0 returning D; and its calls."""
    previous, calls = None, 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * torch.ones(x.shape[0]))
        calls += 1
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            blended = denoised
            if previous is not None:
                r = math.log(float(sigmas[i - 1]) / sigma) / h
                blended = (1 + 1 / (2 * r)) * denoised - previous / (2 * r)
            x = (sigma_next / sigma) * x - math.expm1(-h) * blended
        previous = denoised
    return x, calls


@pytest.mark.parametrize("solver", ["dpmpp_1s", "dpmpp_2m", "unipc", "unipc_afs"])
def test_end_zero_evaluates_the_same_sigmas_and_steps_the_last_to_zero(solver):
    early = make_plan(CUSTOM, params=f"{BARE} solver={solver}")
    zero = make_plan(CUSTOM, params=f"{BARE} solver={solver} end=0")
    assert torch.equal(zero.sigmas[:-1], early.sigmas[:-1]) and early.sigmas[-1] > 0 and zero.sigmas[-1] == 0
    assert zero.nfe == early.nfe == 5 and zero.solver == early.solver
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)) * 14.6
    seen = []

    def model(x_at, sigma, **_):
        seen.append(float(sigma[0]))
        return Toy()(x_at, sigma)

    result = sample(model, x, zero.sigmas, disable=True, solver=zero.solver)
    assert len(seen) == 5 and 0.0 not in seen and torch.isfinite(result).all()
    if solver == "dpmpp_2m":
        straight, calls = straight_dpmpp_2m(Toy(), x, zero.sigmas)
        assert calls == 5 and torch.allclose(result, straight, atol=1e-5)
    if solver == "dpmpp_1s":  # the last step to 0 returns the data prediction at the last evaluated sigma
        before = sample(model, x, zero.sigmas[:-1], disable=True, solver=zero.solver)
        assert torch.allclose(result, Toy()(before, zero.sigmas[-2:-1]), atol=1e-6)
