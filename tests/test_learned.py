"""The solver whose numbers are parameters (fewstep/learned.py, docs/learned_solver.md): default weights are the
pack's DPM++ solvers, offsets and model times against straight re-implementations, the params fields, and the
nodes on the tiny real UNet (both ComfyUI versions)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import conditioning, latent

from fewstep.learned import PRECONDITIONINGS, at_model_time, model_sigma, sample_weighted
from fewstep.noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS
from fewstep.params import ParamsError, ScheduleParams, format_params, parse_params
from fewstep.plan import PlanError, make_plan
from fewstep.recipes import CUSTOM, RECIPES
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.solvers import SOLVERS, sample_fewstep

SEED, CFG = 11, 4.0
TEXT = "fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2 solver=dpmpp_2m"


def toy(x, sigma, **extra):
    s = sigma.view(-1, 1, 1, 1)
    return torch.tanh(x / (1.0 + s)) * 0.8 + 0.1 * torch.sin(3.0 * x) / (1.0 + s ** 2)


def schedules():
    """Every DPM++ recipe's sigmas (eps form), and the same shape squeezed into (0, 1) from 1 (const form)."""
    for name, recipe in RECIPES.items():
        if recipe.solver in SOLVERS:
            sigmas = recipe_sigmas(recipe, standard_sigma_table()).double()
            yield name, recipe.solver, sigmas, NOISE_FORM_EPS
            squeezed = sigmas / (1.0 + sigmas)
            squeezed[0] = 1.0
            yield name + " const", recipe.solver, squeezed, NOISE_FORM_CONST


@pytest.mark.parametrize("name, solver, sigmas, form", list(schedules()), ids=lambda v: v if isinstance(v, str) else "")
def test_default_weights_are_the_solver_on_every_recipe(name, solver, sigmas, form):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    zero = [tuple(0.0 for _ in range(min(i + 1, 3))) for i in range(len(sigmas) - 1)]
    for end_zero in (False, True):
        path = torch.cat([sigmas[:-1], sigmas.new_zeros(1)]) if end_zero else sigmas
        ours = sample_weighted(toy, x, path, disable=True, base=solver, weights=zero, noise_form=form)
        theirs = sample_fewstep(toy, x, path, disable=True, solver=solver, noise_form=form)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def straight_weighted(x, sigmas, offsets, form):
    """x' = (s'/s) x + alpha' (1 - e^-h) sum_j w_j D_{i-j}, DPM++2M's weights plus offsets, in float64 numpy."""
    def lam(s):
        return -math.log(s) if form == NOISE_FORM_EPS else math.log((1 - s) / s)

    x, history = x.copy(), []
    for i in range(len(sigmas) - 1):
        s, s2 = sigmas[i], sigmas[i + 1]
        history.insert(0, toy(torch.from_numpy(x), torch.tensor([s], dtype=torch.float64)).numpy())
        w = [1.0, 0.0, 0.0]
        if i > 0:
            r = (lam(s) - lam(sigmas[i - 1])) / (lam(s2) - lam(s))
            w = [1 + 1 / (2 * r), -1 / (2 * r), 0.0]
        w = [a + b for a, b in zip(w, list(offsets[i]) + [0.0] * 3)]
        blend = sum(wj * d for wj, d in zip(w, history[:3]))
        alpha2 = 1.0 if form == NOISE_FORM_EPS else 1 - s2
        x = (s2 / s) * x + alpha2 * (1 - math.exp(-(lam(s2) - lam(s)))) * blend
    return x


@pytest.mark.parametrize("form", [NOISE_FORM_EPS, NOISE_FORM_CONST])
def test_weight_offsets_against_a_straight_reimplementation(form):
    sigmas = [14.6, 4.5, 1.96, 1.0, 0.5, 0.13] if form == NOISE_FORM_EPS else [0.95, 0.8, 0.6, 0.4, 0.2, 0.05]
    offsets = [(0.3,), (-0.2, 0.4), (0.1, -0.3, 0.25), (0.0, 0.5, -0.5), (-0.1, 0.0, 0.2)]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = sample_weighted(toy, x, torch.tensor(sigmas, dtype=torch.float64), disable=True, weights=offsets,
                           noise_form=form)
    np.testing.assert_allclose(ours.numpy(), straight_weighted(x.numpy(), sigmas, offsets, form), rtol=1e-10,
                               atol=1e-10)


def test_model_sigma_is_a_shift_in_lambda():
    assert model_sigma(2.0, 0.3) == pytest.approx(2.0 * math.exp(0.3), rel=1e-15)
    s = model_sigma(0.4, -0.2, NOISE_FORM_CONST)
    assert math.log((1 - s) / s) == pytest.approx(math.log(0.6 / 0.4) + 0.2, rel=1e-12)
    assert model_sigma(1.0, 0.4, NOISE_FORM_CONST) == 1.0


@pytest.mark.parametrize("kind", ["eps", "v", "const"])
def test_the_model_time_realisation_is_what_the_network_sees(kind):
    """A network F(input, sigma_told) behind a model that forms input and D from the sigma it is given: the wrapper
    makes the network see c_in(sigma) x at sigma e^delta, and D = c_skip(sigma) x + c_out(sigma) F."""
    p = PRECONDITIONINGS[kind]
    form = NOISE_FORM_CONST if kind == "const" else NOISE_FORM_EPS
    seen = []

    def network(z, sigma_told):
        seen.append((z.clone(), sigma_told))
        return torch.sin(2.0 * z) * (1.0 + sigma_told)

    def model(x, sigma):
        s = float(sigma[0])
        return p.c_skip(s) * x + p.c_out(s) * network(p.c_in(s) * x, s)

    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s, delta = (0.6 if kind == "const" else 3.0), 0.35
    wrapped = at_model_time(model, [delta], p, form)
    got = wrapped(x, torch.tensor([s], dtype=torch.float64))
    s_m = model_sigma(s, delta, form)
    z, told = seen[-1]
    assert told == pytest.approx(s_m, rel=1e-14)
    torch.testing.assert_close(z, p.c_in(s) * x, rtol=1e-13, atol=1e-13)
    expected = p.c_skip(s) * x + p.c_out(s) * network(p.c_in(s) * x, s_m)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert wrapped(x, torch.tensor([s], dtype=torch.float64)) is not None and len(seen) == 3  # 2nd: delta 0, plain


@pytest.mark.parametrize("text, field, allowed", [
    (TEXT + " weights=2.5,0,0,0,0", "weights step 1", "allowed -2 to 2"),
    (TEXT + " weights=0,0,0:0:0:0,0,0", "weights step 3 has 4 offsets", "allows 1 to 3"),
    (TEXT + " weights=0,0,0", "weights has 3 steps", "one per step (5)"),
    (TEXT + " weights=0,a,0,0,0", "weights must be numbers", "':' between"),
    (TEXT.replace("dpmpp_2m", "unipc") + " weights=0,0,0,0,0", "need solver = dpmpp_1s or dpmpp_2m", "unipc"),
    (TEXT + " model_time=0,0,0.6,0,0", "model_time evaluation 3", "allowed -0.5 to 0.5"),
    (TEXT + " model_time=0,0,0,0", "model_time has 4 values", "one per model evaluation (5)"),
    (TEXT + " model_time=0,0,nan,0,0", "model_time evaluation 3", "allowed -0.5 to 0.5"),
    # afs and prediction (tests/test_learned_forms.py)
    (TEXT + " afs=2", "afs = '2'", "['0', '1']"),
    (TEXT + " afs=yes", "afs = 'yes'", "['0', '1']"),
    (TEXT.replace("dpmpp_2m", "unipc") + " afs=1", "afs = 1", "solver=unipc_afs"),
    (TEXT.replace(" solver=dpmpp_2m", "") + " afs=1", "afs = 1", "dpmpp_1s or dpmpp_2m"),
    (TEXT + " afs=1 weights=0,0,0,0,0", "weights has 5 steps", "(6 for 5 model evaluations with afs=1"),
    (TEXT + " weights=0,0,0,0,0,0", "weights has 6 steps", "one per step (5)"),
    (TEXT + " prediction=eps", "prediction = 'eps'", "['noise', 'data']"),
    (TEXT.replace("dpmpp_2m", "unipc_afs") + " prediction=noise", "prediction = noise", "dpmpp_1s or dpmpp_2m"),
])
def test_bad_fields_are_named_with_the_allowed_range(text, field, allowed):
    with pytest.raises(ParamsError) as error:
        parse_params(text)
    assert field in str(error.value) and allowed in str(error.value)
    with pytest.raises(PlanError) as plan_error:
        make_plan(CUSTOM, params=text)
    assert plan_error.value.input == "params"


def test_the_fields_round_trip_short():
    text = TEXT + " weights=0.1,0.05:-0.2,0:0.3:-0.1,0,0 model_time=0,0.1,-0.2,0,0.05"
    params = parse_params(text)
    assert params.weights == ((0.1,), (0.05, -0.2), (0.0, 0.3, -0.1), (0.0,), (0.0,))
    assert params.model_time == (0.0, 0.1, -0.2, 0.0, 0.05)
    assert format_params(params) == text.replace("base_rho=5.0", "base_rho=5")
    plan = make_plan(CUSTOM, params=text)
    assert plan.solver.weights == params.weights and plan.solver.model_time == params.model_time
    assert format_params(ScheduleParams(5, 8, 5.0, 6, 1.2, solver="dpmpp_1s", weights=((0.0,), (0.25, 0.0)) +
                                        ((0.0, 0.0, 0.0),) * 3)).endswith("weights=0,0.25,0,0,0")


# --- the nodes on the tiny real UNet (PINNED by default; CURRENT with COMFYUI_PATH) ---

def run_ksampler(comfy, model, params):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]()
    out, _ = node.sample(model, SEED, CFG, CUSTOM, "off", conditioning(1), conditioning(2), latent(8), 1.0, params)
    return out["samples"]


def test_zero_weights_and_model_times_are_bit_identical_through_the_node(comfy, tiny_model):
    plain = run_ksampler(comfy, tiny_model, TEXT)
    zeros = run_ksampler(comfy, tiny_model, TEXT + " weights=0,0,0,0,0 model_time=0,0,0,0,0")
    assert torch.equal(plain, zeros)
    moved = run_ksampler(comfy, tiny_model, TEXT + " weights=0,0.2,0,0,0")
    assert not torch.equal(plain, moved) and torch.isfinite(moved).all()


def straight_sampling(comfy, model, sigmas, offsets, deltas, kind):
    """The network called by hand: input c_in(sigma) x, timestep of sigma e^delta, D formed with sigma, CFG by hand,
    DPM++2M with offsets (straight_weighted's step), the start noise as SamplerCustom draws it."""
    import comfy.sample

    base = model.model
    ms = model.object_patches.get("model_sampling", base.model_sampling)
    # SamplerCustom from sigma_max: the noise scaled to sqrt(1 + sigma_max^2) (a pure-noise start), both versions
    x = comfy.sample.prepare_noise(latent(8)["samples"], SEED) * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    history = []
    values = sigmas.tolist()
    for i in range(len(values) - 1):
        s, s2 = values[i], values[i + 1]
        s_m = s * math.exp(deltas[i])
        t = ms.timestep(torch.tensor([s_m], dtype=torch.float32)).float()
        z = x / math.sqrt(s * s + 1.0)
        outs = [base.diffusion_model(z, t, context=c[0][0]) for c in (conditioning(1), conditioning(2))]
        ds = [x - s * o if kind == "eps" else x / (s * s + 1) - o * s / math.sqrt(s * s + 1) for o in outs]
        d = ds[1] + CFG * (ds[0] - ds[1])
        history.insert(0, d)
        w = [1.0, 0.0, 0.0]
        if i > 0:
            r = math.log(values[i - 1] / s) / math.log(s / s2)
            w = [1 + 1 / (2 * r), -1 / (2 * r), 0.0]
        w = [a + b for a, b in zip(w, list(offsets[i]) + [0.0] * 3)]
        blend = sum(wj * dj for wj, dj in zip(w, history[:3]))
        x = (s2 / s) * x + (1 - s2 / s) * blend
    return base.process_latent_out(x)  # as SamplerCustom hands the latent back


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_model_time_and_weights_through_the_node_against_the_network_called_by_hand(comfy, tiny_model, kind):
    model = tiny_model
    if kind == "v":
        model = comfy.model_advanced.ModelSamplingDiscrete().patch(tiny_model, "v_prediction", False)[0]
    offsets = [(0.1,), (0.2, -0.1), (0.0, 0.3, -0.2), (-0.1,), (0.0, 0.0, 0.15)]
    deltas = [0.3, -0.2, 0.1, 0.45, -0.4]
    text = (TEXT + " weights=" + ",".join(":".join(str(v) for v in o) for o in offsets)
            + " model_time=" + ",".join(str(v) for v in deltas))
    ours = run_ksampler(comfy, model, text)
    sigmas = make_plan(CUSTOM, params=text).sigmas
    with torch.no_grad():
        expected = straight_sampling(comfy, model, sigmas, offsets, deltas, kind)
    torch.testing.assert_close(ours, expected, rtol=2e-5, atol=2e-5)
    without = run_ksampler(comfy, model, TEXT + " weights=" + ",".join(":".join(str(v) for v in o) for o in offsets))
    assert (ours - without).abs().max() > 1e-3  # the model time is not a no-op


# --- the tuner learns them ---

def test_the_tuner_node_learns_and_few_step_ksampler_reproduces_it(comfy, tiny_model, conds):
    """learn = schedule+weights+model time on the real UNet: the text carries what won on the held-out noises (or
    the schedule alone, with the reason), the cost counts the fit, and Few-Step KSampler with recipe `custom` and
    the text reproduces the reported distance on the probe noises (the first probe_seeds of the seed's batch)."""
    from test_tuner import ksampler_latent

    from fewstep.tuner_objective import distance

    tuning = comfy.pack.nodes.tuning
    node = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]()
    args = (tiny_model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 2, 9, 5.0)
    sigmas, text = node.tune(*args, None, "schedule+weights+model time")
    key = tuning.cache_key(*plain_args(tiny_model, conds), "schedule+weights+model time")
    result = tuning.CACHE.get(*key)
    assert result is not None and result.text == text and "held-out" in result.learned
    # the search's reference, the fit's two finer ones (probes, held out), the schedules, the fit
    assert result.model_evaluations > 40 + 2 * tuning.LEARN_REFERENCE_STEPS + 5 * result.candidates
    params = parse_params(text)
    learned = result.learned.startswith("learned")
    assert (params.weights is not None) == learned
    search_key, objects = tuning.reference_key(tiny_model, conds[0], conds[1], 5.5, (4, 8, 8), 2, 9)
    fit_reference = tuning.REFERENCES.get((*search_key, "fit", tuning.LEARN_REFERENCE_STEPS), objects)
    search_reference = tuning.REFERENCES.get(search_key, objects)
    assert fit_reference is not None and fit_reference.shape == search_reference.shape
    assert not torch.equal(fit_reference, search_reference)  # finer than the search's 40 steps
    sampled = ksampler_latent(comfy, tiny_model, conds, 9, 2, text)
    # a kept fit reports its distance to its own reference, else the search's to the search's
    assert distance(sampled, fit_reference if learned else search_reference) == pytest.approx(result.objective,
                                                                                                rel=1e-4)
    plain = tuning.cache_key(*plain_args(tiny_model, conds))
    assert plain[0] != key[0] and plain[0] == tuning.cache_key(*plain_args(tiny_model, conds), "schedule")[0]


def plain_args(model, conds):
    """cache_key's arguments for the node run above, learn left out."""
    return (model, conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 9, 5.0, None)


@pytest.fixture(scope="module")
def photo_eps(comfy):
    """The photo_eps trained proxy (a real ComfyUI model), its table, and a sampler of params from given noises."""
    import sys

    from conftest import REPO

    sys.path.append(str(REPO / "benchmarks"))
    from quality_trained import TrainedTarget, trained_models

    return TrainedTarget(comfy, trained_models()["photo_eps"])


def proxy_runs(target, noises: list[torch.Tensor], work):
    """``work(run per noise batch)`` inside one guided sampling call of the proxy (as the tuner node runs)."""
    from fewstep.tuner import denoiser_run

    table = target.ms.sigmas.double().cpu()
    sizes = [len(n) for n in noises]

    def inside(denoiser, x):
        runs, start = [], 0
        for size in sizes:
            runs.append(denoiser_run(denoiser, x[start:start + size], table, PRECONDITIONINGS["eps"]))
            start += size
        return work(runs, table)

    return target.with_denoiser(torch.cat(noises), inside)


def test_learning_beats_the_schedule_on_noises_it_never_saw_and_stays_bounded(photo_eps):
    """On the photo_eps proxy at a small budget (8 probes, 12 schedules, 3 fit iterations): the learned weights and
    model times are chosen by the held-out check, closer to the reference on 32 further noises, and, with every
    offset at the fit's limit (alternating in sign), sampling 128 noises (32 scaled up 3x) stays finite and within
    twice the range of their 10-step reference."""
    from fewstep.tuner import compute_reference, tune
    from fewstep.tuner_learn import FIT_WEIGHT_LIMIT, LEARN_MODEL_TIME, learn
    from fewstep.tuner_objective import distance

    shape = photo_eps.latent_shape
    noises = [torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
              for n, seed in ((8, 1), (8, 2), (32, 3))]
    stress = torch.randn((128, *shape), generator=torch.Generator().manual_seed(4))
    stress[:32] *= 3.0

    def work(runs, table):
        probe, held, fresh, wide = runs
        references = [compute_reference(run, table, steps) for run, steps in zip(runs, (40, 40, 40, 10))]
        tuned = tune(probe, table, 5, "dpmpp_2m", reference=references[0], max_candidates=12, end="index")
        learned = learn(probe, references[0], held, references[1], table, tuned.params, LEARN_MODEL_TIME,
                        max_iterations=3)
        sigmas = tuned.params.sigmas(table)
        fresh_distances = [distance(fresh(sigmas, make_plan(CUSTOM, params=format_params(p)).solver), references[2])
                           for p in (tuned.params, learned.fitted)]
        alternating = tuple(tuple(FIT_WEIGHT_LIMIT * (-1) ** (i + j) for j in range(len(group)))
                            for i, group in enumerate(learned.fitted.weights))
        extreme = dataclasses.replace(learned.fitted, weights=alternating)
        wild = wide(sigmas, make_plan(CUSTOM, params=format_params(extreme)).solver)
        return learned, fresh_distances, wild, references[3]

    learned, (schedule_alone, with_learned), wild, wide_reference = proxy_runs(photo_eps, noises + [stress], work)
    print(learned.reason, f"fresh noises: {schedule_alone:.4g} -> {with_learned:.4g}")
    assert learned.learned and learned.held_out[1] < learned.held_out[0]
    assert with_learned < 0.95 * schedule_alone
    assert torch.isfinite(wild).all() and wild.abs().max() < 2.0 * wide_reference.abs().max()


def _toy_fit_runs():
    """(table, runs, references) on the toy denoiser: 8 probe noises (seed 1) and 8 held out (seed 2), 4x6x6."""
    from fewstep.tuner_objective import compute_reference, denoiser_run

    table = standard_sigma_table().double()
    noises = [torch.randn((8, 4, 6, 6), generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    runs = [denoiser_run(toy, x, table) for x in noises]
    return table, runs, [compute_reference(run, table, 40) for run in runs]


def _counted(run, reference):
    """``run`` that records each result's distance to ``reference`` in the list returned beside it."""
    from fewstep.tuner_objective import distance

    seen = []

    def counted(sigmas, solver):
        x = run(sigmas, solver)
        seen.append(distance(x, reference))
        return x

    return counted, seen


def test_the_fit_steps_on_between_jacobians_one_run_a_step():
    """With one finite-difference Jacobian allowed (on the toy denoiser, 8 probes, N = 5: 16 parameters), the fit goes
    on with Broyden-updated steps of one run each: more trial runs than one Jacobian's damping tries, and a probe
    distance below the best the Jacobian's runs and its first step reached."""
    from fewstep.tuner_learn import DAMPING_TRIES, LEARN_WEIGHTS, learn

    table, runs, references = _toy_fit_runs()
    probe_run, seen = _counted(runs[0], references[0])
    params = parse_params(TEXT + " ramp=0.15,0.35,0.6,0.85")
    parameters = 12 + 4  # offsets (1 + 2 + 3 + 3 + 3) and ramp logits
    learned = learn(probe_run, references[0], runs[1], references[1], table, params, LEARN_WEIGHTS, max_iterations=1)
    first = 2 + parameters + 1  # the schedule, the start, the Jacobian's columns, the first trial step
    fit_runs = len(seen) - 1  # the fitted params' own run at the end
    assert fit_runs > first + DAMPING_TRIES
    assert learned.tuning[1] < 0.99 * min(seen[:first])


def test_the_fit_stops_after_max_runs_on_its_probes():
    """``max_runs`` bounds the fit's runs on the probes (the held-out check's two runs come after it), whatever the
    clock says: on the toy denoiser a fit allowed 30 runs makes 30 fitting runs and its result's count says so; one
    allowed 60 runs more, and reaches at least as close."""
    from fewstep.tuner_learn import LEARN_WEIGHTS, learn

    table, runs, references = _toy_fit_runs()
    params = parse_params(TEXT + " ramp=0.15,0.35,0.6,0.85")
    fits = {}
    for limit in (30, 60):
        probe_run, seen = _counted(runs[0], references[0])
        fits[limit] = learn(probe_run, references[0], runs[1], references[1], table, params, LEARN_WEIGHTS,
                            max_runs=limit), len(seen)
    for limit, (learned, probe_runs) in fits.items():
        assert probe_runs == limit + 1  # the fitted params' own run at the end
        assert learned.runs == probe_runs + 2  # and the held-out check's two
    assert fits[60][0].tuning[1] <= fits[30][0].tuning[1]


def test_the_five_node_graph_reproduces_few_step_ksampler_with_learned_numbers(comfy, tiny_model):
    """Few-Step Sigmas and Few-Step DPM++ Sampler given the same text (its `params` input) in SamplerCustom: bit for
    bit Few-Step KSampler; a sampler whose solver is not the text's, or SIGMAS of another length, is refused."""
    text = TEXT + " weights=0.1,0.2:-0.1,0:0.3:-0.2,-0.1,0:0:0.15 model_time=0.3,-0.2,0.1,0.45,-0.4"
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    sigmas = nodes["FewStepSigmas"]().get_sigmas(tiny_model, CUSTOM, 1.0, 5, 8, 5.0, 6, 1.2, params=text)[0]
    sampler = nodes["FewStepDPMPPSampler"]().get_sampler("dpmpp_2m", "last_sigma", text)[0]
    out, _ = comfy.custom_sampler.SamplerCustom().sample(tiny_model, True, SEED, CFG, conditioning(1),
                                                         conditioning(2), sampler, sigmas, latent(8))
    assert torch.equal(out["samples"], run_ksampler(comfy, tiny_model, text))
    with pytest.raises(ValueError, match="Few-Step DPM\\+\\+ Sampler: params names solver = dpmpp_2m, but this "
                                         "sampler's solver is dpmpp_1s"):
        nodes["FewStepDPMPPSampler"]().get_sampler("dpmpp_1s", "last_sigma", text)
    eight = nodes["FewStepSigmas"]().get_sigmas(tiny_model, "SD1.5 8-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
    with pytest.raises(ValueError, match="weights has 5 steps but the SIGMAS have 8"):
        comfy.custom_sampler.SamplerCustom().sample(tiny_model, True, SEED, CFG, conditioning(1), conditioning(2),
                                                    sampler, eight, latent(8))


def test_the_preconditioning_is_read_off_each_model_sampling_kind(comfy):
    """comfy_api.preconditioning_of through ComfyUI's own calculate_input / calculate_denoised equals the closed forms
    (docs/learned_solver.md) for EPS, V_PREDICTION, EDM (sigma_data 0.5) and, where ComfyUI has it, CONST."""
    import comfy.model_sampling as ms

    from fewstep.learned import Preconditioning

    def edm(d):
        return Preconditioning(lambda s: 1 / math.sqrt(s * s + d * d), lambda s: d * d / (s * s + d * d),
                               lambda s: s * d / math.sqrt(s * s + d * d))

    kinds = [(ms.ModelSamplingDiscrete, ms.EPS, PRECONDITIONINGS["eps"]),
             (ms.ModelSamplingDiscrete, ms.V_PREDICTION, PRECONDITIONINGS["v"]),
             (ms.ModelSamplingContinuousEDM, ms.EDM, edm(0.5))]
    if hasattr(ms, "CONST"):
        kinds.append((ms.ModelSamplingDiscreteFlow, ms.CONST, PRECONDITIONINGS["const"]))
    for sampling, kind, expected in kinds:
        model_sampling = type("Sampling", (sampling, kind), {})()
        if kind is ms.EDM:
            model_sampling.set_parameters(0.002, 120.0, 0.5)
        got = comfy.pack.nodes.comfy_api.preconditioning_of(model_sampling)
        for s in (0.03, 0.5, 0.9, 3.0, 14.6):
            for name in ("c_in", "c_skip", "c_out"):
                assert getattr(got, name)(s) == pytest.approx(getattr(expected, name)(s), rel=1e-12), (kind, name, s)


UNIPC_TEXTS = ("fewstep v1: steps=5 base_steps=8 base_rho=5.0 end_index=6 time_rho=1.2 ramp=0.15,0.35,0.6,0.85",
               "fewstep v1: steps=6 base_steps=8 base_rho=5.0 end_index=7 time_rho=1.2 end=0",
               "fewstep v1: steps=8 base_steps=12 base_rho=7.0 end_index=10 time_rho=1.2")


@pytest.mark.parametrize("text", UNIPC_TEXTS)
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", ["1", "2"])
def test_unipc_in_the_data_prediction_is_the_weighted_solver_with_the_offsets_read_off_it(text, variant, order):
    """The learned fit starts a UniPC schedule from UniPC itself: carried from one evaluation to the next, UniPC of
    order 1 or 2 in the data prediction is a weighted step on D_i, D_i-1, D_i-2, and the offsets read off it run the
    weighted solver (DPM++2M's weights plus them) to UniPC's result on a non-linear denoiser."""
    from fewstep.plan import solver_named
    from fewstep.sampling import sample
    from fewstep.tuner_learn import equivalent_offsets

    solver = dataclasses.replace(solver_named("unipc", variant=variant, order=order), prediction="data")
    sigmas = parse_params(text).sigmas(standard_sigma_table()).double()
    offsets = equivalent_offsets(solver, sigmas.tolist())
    assert offsets is not None and [len(g) for g in offsets] == [min(i + 1, 3) for i in range(len(sigmas) - 1)]
    x = 14.6 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    theirs = sample(toy, x, sigmas, disable=True, solver=solver)
    ours = sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_2m", weights=offsets)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("text", UNIPC_TEXTS)
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", ["1", "2"])
def test_the_recipes_unipc_is_the_weighted_solver_in_the_noise_prediction(text, variant, order):
    """UniPC in the noise prediction (the recipes' and the params texts') carries every earlier output in the data
    prediction (no offsets there), but weighs noise predictions as a weighted step does in DPM-Solver's form: the
    offsets read off it run the weighted solver with prediction noise to UniPC's result; order 3 takes four."""
    from fewstep.plan import solver_named
    from fewstep.sampling import sample
    from fewstep.tuner_learn import equivalent_offsets

    solver = solver_named("unipc", variant=variant, order=order)
    sigmas = parse_params(text).sigmas(standard_sigma_table()).double()
    assert equivalent_offsets(solver, sigmas.tolist()) is None
    offsets = equivalent_offsets(solver, sigmas.tolist(), prediction="noise")
    x = 14.6 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    theirs = sample(toy, x, sigmas, disable=True, solver=solver)
    ours = sample_weighted(toy, x, sigmas, disable=True, weights=offsets, prediction="noise")
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert equivalent_offsets(solver_named("unipc", order="3"), sigmas.tolist(), prediction="noise") is None


@pytest.mark.parametrize("text", UNIPC_TEXTS)
def test_the_recipes_unipc_folded_to_three_data_predictions_is_closer_than_dpmpp(text):
    """UniPC in the noise prediction (the recipes' and the params texts') carries every earlier data prediction: no
    exact offsets in the data prediction; folded onto the three newest (the learned fit's start from a UniPC
    schedule) it runs closer to UniPC than DPM++1S or DPM++2M on the same schedule do."""
    from fewstep.plan import solver_named
    from fewstep.sampling import sample
    from fewstep.tuner_learn import equivalent_offsets

    solver = solver_named("unipc")
    sigmas = parse_params(text).sigmas(standard_sigma_table()).double()
    assert equivalent_offsets(solver, sigmas.tolist()) is None
    folded = equivalent_offsets(solver, sigmas.tolist(), fold=True)
    x = 14.6 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    unipc = sample(toy, x, sigmas, disable=True, solver=solver)
    gap = float((sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_2m", weights=folded) - unipc).abs().max())
    for name in SOLVERS:
        assert gap < 0.5 * float((sample_fewstep(toy, x, sigmas, disable=True, solver=name) - unipc).abs().max())


def test_the_fit_of_a_unipc_schedule_starts_from_the_best_of_unipcs_folded_weights_and_the_dpmpp_solvers(
        monkeypatch):
    """learn from a UniPC schedule: the start (no Jacobian allowed, so the fit returns it) is the closest to the
    reference of DPM++1S, DPM++2M and UniPC's folded offsets (bh1, order 1: inside the fit's box), each run here by
    hand, and the result says which. From a start whose text leaves out a step's trailing zero offsets (UniPC itself:
    the weighted solver on noise predictions with the offsets read off it), the fit's first point is that start."""
    from fewstep import tuner_learn
    from fewstep.plan import solver_named
    from fewstep.tuner_learn import LEARN_WEIGHTS, equivalent_offsets, learn
    from fewstep.tuner_objective import compute_reference, denoiser_run, distance

    table = standard_sigma_table().double()
    noises = [torch.randn((8, 4, 6, 6), generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    runs = [denoiser_run(toy, x, table) for x in noises]
    references = [compute_reference(run, table, 40) for run in runs]
    params = parse_params(UNIPC_TEXTS[0] + " solver=unipc variant=bh1 order=1")
    sigmas = params.sigmas(table)
    unipc = solver_named("unipc", variant="bh1", order="1")
    folded = equivalent_offsets(unipc, sigmas.tolist(), fold=True)
    by_hand = {name: distance(runs[0](sigmas, name), references[0]) for name in SOLVERS}
    by_hand["unipc's weights"] = distance(runs[0](sigmas, dataclasses.replace(solver_named("dpmpp_2m"),
                                                                              weights=folded)), references[0])
    learned = learn(runs[0], references[0], runs[1], references[1], table, params, LEARN_WEIGHTS, max_iterations=0)
    best = min(by_hand, key=by_hand.get)
    # runs: the schedule, the three starts, the start again as the fit's first point, the fitted, two held out
    assert learned.runs == 1 + 3 + 1 + 1 + 2
    assert learned.origin.startswith(best + ",") and learned.tuning[1] == pytest.approx(by_hand[best], rel=1e-3)
    itself = distance(runs[0](sigmas, unipc), references[0])
    assert learned.tuning[0] == pytest.approx(itself, rel=1e-6)
    own = equivalent_offsets(unipc, sigmas.tolist(), prediction="noise")
    start = parse_params(format_params(dataclasses.replace(params, solver="dpmpp_2m", variant=None, order=None,
                                                           prediction="noise", weights=own)))
    assert any(len(group) < min(i + 1, 3) for i, group in enumerate(start.weights))  # trailing zeros left out
    monkeypatch.setattr(tuner_learn, "starts", lambda schedule, sigma_table: {"unipc": start})
    alone = learn(runs[0], references[0], runs[1], references[1], table, params, LEARN_WEIGHTS, max_iterations=0)
    assert alone.origin.startswith("unipc,") and alone.tuning[1] == pytest.approx(itself, rel=1e-3)
