"""The weighted solver's two options that make it UniPC as the recipes run it (fewstep/learned.py,
docs/learned_solver.md): the analytical first step (params ``afs=1``) and steps that weigh noise predictions
(``prediction=noise``), against first-order UniPC, DPM++1S and straight re-implementations; UniPC (with AFS) read off
as its offsets, where the learned fit starts; the params fields; the nodes on the tiny real UNet (both versions)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import conditioning, latent
from test_learned import CFG, SEED, TEXT, run_ksampler, toy

from fewstep.learned import sample_weighted
from fewstep.noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS
from fewstep.params import format_params, parse_params
from fewstep.plan import make_plan, solver_named
from fewstep.recipes import CUSTOM, RECIPES
from fewstep.sampling import sample
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.solver_names import UNIPC_SOLVERS
from fewstep.solvers import sample_fewstep
from fewstep.tuner_learn import equivalent_offsets
from fewstep.unipc import afs_midpoint, sample_unipc

TABLE = standard_sigma_table().double()
EPS = parse_params(TEXT).sigmas(TABLE).double()
CASES = {  # name: (sigmas, noise form, sigma table placing the midpoint, start scale)
    "eps": (EPS, NOISE_FORM_EPS, TABLE, float(EPS[0])),
    "eps end 0": (torch.cat([EPS[:-1], EPS.new_zeros(1)]), NOISE_FORM_EPS, TABLE, float(EPS[0])),
    "const": (torch.tensor([0.95, 0.8, 0.6, 0.4, 0.2, 0.05], dtype=torch.float64), NOISE_FORM_CONST, None, 1.0),
    "const from 1": (torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.05], dtype=torch.float64), NOISE_FORM_CONST, None, 1.0),
}


def start(scale: float) -> torch.Tensor:
    return scale * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_dpmpp_1s_with_afs_is_first_order_unipc_with_afs(case):
    """UniPC of order 1 in the data prediction, without its corrector, is DPM++1S; with the analytical first step
    both estimate D_0 from the latent and insert the same midpoint: the weighted solver with afs is that solver."""
    sigmas, form, table, scale = CASES[case]
    x = start(scale)
    ours = sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_1s", afs=True, noise_form=form,
                           sigma_table=table)
    theirs = sample_unipc(toy, x, sigmas, disable=True, order=1, afs=True, prediction="data", corrector=False,
                          noise_form=form, sigma_table=table)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    plain = sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_1s", noise_form=form)
    assert float((ours - plain).abs().max()) > 1e-3


def straight_lam(s: float, form: str) -> float:
    """The half-log-SNR of sigma ``s``, written out: -log s (eps form), log((1 - s) / s) (const form); inf at 0,
    -inf at 1 (const form)."""
    if s == 0.0:
        return math.inf
    return -math.log(s) if form == NOISE_FORM_EPS else (math.log((1 - s) / s) if s < 1 else -math.inf)


def straight_alpha(s: float, form: str) -> float:
    return 1.0 if form == NOISE_FORM_EPS else 1.0 - s


def straight_afs(x: np.ndarray, sigmas: list[float], offsets, form: str, middle: float) -> np.ndarray:
    """DPM++2M's weights plus offsets over [sigma_0, middle, sigma_1, ...], D_0 = the latent's estimate (eps form
    x - sigma eps with eps = x / sqrt(1 + sigma^2); const form x alpha / (n (n + sigma)), n = sqrt(alpha^2 +
    sigma^2)), in float64 numpy."""
    def lam(s):
        return straight_lam(s, form)

    def alpha(s):
        return straight_alpha(s, form)

    path = [sigmas[0], middle, *sigmas[1:]]
    s0 = path[0]
    n = math.sqrt(alpha(s0) ** 2 + s0 ** 2)
    history = [x - s0 * x / n if form == NOISE_FORM_EPS else x * alpha(s0) / (n * (n + s0))]
    for i in range(len(path) - 1):
        s, s2 = path[i], path[i + 1]
        if i > 0:
            history.insert(0, toy(torch.from_numpy(x), torch.tensor([s], dtype=torch.float64)).numpy())
        w = [1.0, 0.0, 0.0]
        if i > 0 and math.isfinite(lam(path[i - 1])) and s2 > 0:
            r = (lam(s) - lam(path[i - 1])) / (lam(s2) - lam(s))
            w = [1 + 1 / (2 * r), -1 / (2 * r), 0.0]
        w = [a + b for a, b in zip(w, list(offsets[i]) + [0.0] * 3)]
        blend = sum(wj * d for wj, d in zip(w, history[:3]))
        if s2 == 0.0:
            return blend
        if not math.isfinite(lam(s)):
            x = s2 * x + alpha(s2) * blend
        else:
            x = (s2 / s) * x + alpha(s2) * (1 - math.exp(-(lam(s2) - lam(s)))) * blend
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_dpmpp_2m_with_afs_and_offsets_against_a_straight_reimplementation(case):
    sigmas, form, table, scale = CASES[case]
    offsets = [(0.2,), (-0.1, 0.3), (0.1, -0.3, 0.25), (0.0, 0.4, -0.2), (-0.1, 0.0, 0.2), (0.05, -0.05)]
    x = start(scale)
    ours = sample_weighted(toy, x, sigmas, disable=True, weights=offsets, noise_form=form, afs=True,
                           sigma_table=table)
    values = sigmas.tolist()
    middle = afs_midpoint(values[0], values[1], table, form)
    np.testing.assert_allclose(ours.numpy(), straight_afs(x.numpy(), values, offsets, form, middle), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", ["1", "2"])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_unipc_with_afs_is_the_weighted_solver_with_afs_in_its_prediction(case, variant, order, prediction):
    """The offsets read off UniPC with AFS (N+1 steps, the first on the estimate) run the weighted solver with afs,
    weighing UniPC's own prediction, to UniPC's result on a non-linear denoiser: the fit starts from a unipc_afs
    schedule's own solver. In the other prediction there are no such offsets."""
    sigmas, form, table, scale = CASES[case]
    solver = dataclasses.replace(solver_named("unipc_afs", variant=variant, order=order, noise_form=form),
                                 prediction=prediction)
    offsets = equivalent_offsets(solver, sigmas.tolist(), sigma_table=table, prediction=prediction)
    assert offsets is not None and [len(g) for g in offsets] == [min(i + 1, 3) for i in range(len(sigmas))]
    x = start(scale)
    theirs = sample(toy, x, sigmas, disable=True, solver=solver, sigma_table=table)
    ours = sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_2m", weights=offsets, noise_form=form, afs=True,
                           sigma_table=table, prediction=prediction)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    if case != "const from 1" and order == "2":
        other = "noise" if prediction == "data" else "data"
        assert equivalent_offsets(solver, sigmas.tolist(), sigma_table=table, prediction=other) is None


def unipc_recipes():
    """Every UniPC recipe's sigmas (eps form), and the same shape squeezed into (0, 1) from 1 (const form)."""
    for name, recipe in RECIPES.items():
        if recipe.solver in UNIPC_SOLVERS:
            sigmas = recipe_sigmas(recipe, TABLE.float()).double()
            yield name, recipe, sigmas, NOISE_FORM_EPS, TABLE
            squeezed = sigmas / (1.0 + sigmas)
            squeezed[0] = 1.0
            yield name + " const", recipe, squeezed, NOISE_FORM_CONST, None


@pytest.mark.parametrize("name, recipe, sigmas, form, table", list(unipc_recipes()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_unipc_recipe_is_the_weighted_solver_with_its_own_offsets(name, recipe, sigmas, form, table):
    """UniPC as each recipe runs it (noise prediction, its variant and order, with or without AFS), early stop and
    end at 0: the weighted solver weighing noise predictions (afs as the recipe's) with the offsets read off it."""
    solver = solver_named(recipe.solver, variant=recipe.variant, order=recipe.order, noise_form=form)
    for end_zero in (False, True):
        path = torch.cat([sigmas[:-1], sigmas.new_zeros(1)]) if end_zero else sigmas
        offsets = equivalent_offsets(solver, path.tolist(), sigma_table=table, prediction="noise")
        assert offsets is not None and len(offsets) == len(path) - 1 + solver.afs
        x = start(float(path[0]) if form == NOISE_FORM_EPS else 1.0)
        theirs = sample(toy, x, path, disable=True, solver=solver, sigma_table=table)
        ours = sample_weighted(toy, x, path, disable=True, weights=offsets, noise_form=form, afs=solver.afs,
                               sigma_table=table, prediction="noise")
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_dpmpp_1s_weighing_noise_predictions_is_dpmpp_1s(case):
    """The first-order step is the same in both predictions (DDIM): zero offsets in the noise prediction give DPM++1S;
    non-zero ones move it."""
    sigmas, form, _, scale = CASES[case]
    x = start(scale)
    ours = sample_weighted(toy, x, sigmas, disable=True, base="dpmpp_1s", noise_form=form, prediction="noise")
    torch.testing.assert_close(ours, sample_fewstep(toy, x, sigmas, disable=True, noise_form=form), rtol=1e-10,
                               atol=1e-10)


def straight_noise(x: np.ndarray, sigmas: list[float], offsets, form: str) -> np.ndarray:
    """DPM-Solver-2M's weights (1 + 1/(2r), -1/(2r)) plus offsets on eps_k = (x_k - alpha_k D_k) / sigma_k:
    x' = (alpha'/alpha) x - sigma' (e^h - 1) sum_j w_j eps_{i-j}; to 0: (x - sigma sum_j w_j eps_{i-j}) / alpha."""
    def lam(s):
        return straight_lam(s, form)

    def alpha(s):
        return straight_alpha(s, form)

    history = []
    for i in range(len(sigmas) - 1):
        s, s2 = sigmas[i], sigmas[i + 1]
        d = toy(torch.from_numpy(x), torch.tensor([s], dtype=torch.float64)).numpy()
        history.insert(0, (x - alpha(s) * d) / s)
        w = [1.0, 0.0, 0.0]
        if i > 0 and s2 > 0:
            r = (lam(s) - lam(sigmas[i - 1])) / (lam(s2) - lam(s))
            w = [1 + 1 / (2 * r), -1 / (2 * r), 0.0]
        w = [a + b for a, b in zip(w, list(offsets[i]) + [0.0] * 3)]
        blend = sum(wj * e for wj, e in zip(w, history[:3]))
        if s2 == 0.0:
            return (x - s * blend) / alpha(s)
        x = (alpha(s2) / alpha(s)) * x - s2 * math.expm1(lam(s2) - lam(s)) * blend
    return x


@pytest.mark.parametrize("case", ["eps", "eps end 0", "const"])
def test_dpmpp_2m_weighing_noise_predictions_against_a_straight_reimplementation(case):
    sigmas, form, _, scale = CASES[case]
    offsets = [(0.2,), (-0.1, 0.3), (0.1, -0.3, 0.25), (0.0, 0.4, -0.2), (-0.1, 0.0, 0.2)]
    x = start(scale)
    ours = sample_weighted(toy, x, sigmas, disable=True, weights=offsets, noise_form=form, prediction="noise")
    np.testing.assert_allclose(ours.numpy(), straight_noise(x.numpy(), sigmas.tolist(), offsets, form), rtol=1e-10,
                               atol=1e-10)


# --- the params fields ---

def test_afs_and_prediction_round_trip_and_afs_adds_a_step_of_weights():
    text = TEXT + " afs=1 prediction=noise weights=0,0.1,0:0.2,0,0,0:0:-0.1"
    params = parse_params(text)
    assert params.afs and params.prediction == "noise" and len(params.weights) == 6
    assert format_params(params) == text.replace("base_rho=5.0", "base_rho=5")
    plan = make_plan(CUSTOM, params=text)
    assert plan.solver.afs and plan.solver.name == "dpmpp_2m" and len(plan.sigmas) == 6  # 5 evaluations
    assert plan.solver.weighted_prediction == "noise"
    plain = parse_params(TEXT + " afs=0 prediction=data")
    assert not plain.afs and plain.prediction == "data" and format_params(plain) == format_params(parse_params(TEXT))


# --- the nodes on the tiny real UNet (PINNED by default; CURRENT with COMFYUI_PATH) ---

def timesteps_seen(comfy, model, work) -> list[float]:
    """The timesteps the UNet is called at while ``work(patched model)`` samples."""
    seen: list[float] = []
    patched = model.clone()

    def wrapper(apply_model, args):
        seen.append(float(args["timestep"].reshape(-1)[0]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    work(patched)
    return seen


def test_afs_through_the_nodes(comfy, tiny_model):
    """Few-Step KSampler with afs=1 (and learned weights) equals the five-node graph with the same text bit for bit;
    it calls the UNet as often as without afs, at the timesteps Few-Step UniPC Sampler with afs on calls it (the
    midpoint on the model's own table), and lands elsewhere than without afs."""
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    text = TEXT + " afs=1 weights=0,0.1,0:0.2,-0.1,0,0"
    sigmas = nodes["FewStepSigmas"]().get_sigmas(tiny_model, CUSTOM, 1.0, 5, 8, 5.0, 6, 1.2, params=text)[0]

    def custom(sampler):
        return lambda model: comfy.custom_sampler.SamplerCustom().sample(
            model, True, SEED, CFG, conditioning(1), conditioning(2), sampler, sigmas, latent(8))[0]["samples"]

    ours = run_ksampler(comfy, tiny_model, text)
    sampler = nodes["FewStepDPMPPSampler"]().get_sampler("dpmpp_2m", "last_sigma", text)[0]
    assert torch.equal(custom(sampler)(tiny_model), ours)
    with_afs = timesteps_seen(comfy, tiny_model, lambda m: run_ksampler(comfy, m, text))
    plain = timesteps_seen(comfy, tiny_model, lambda m: run_ksampler(comfy, m, TEXT))
    unipc = nodes["FewStepUniPCSampler"]().get_sampler("auto", "bh1", True, "last_sigma")[0]
    assert len(with_afs) == len(plain) and with_afs == timesteps_seen(comfy, tiny_model, custom(unipc))
    assert with_afs[0] != plain[0] and with_afs[1:] == plain[1:]
    assert (ours - run_ksampler(comfy, tiny_model, TEXT)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="weights has 6 steps but the SIGMAS have 8"):
        eight = nodes["FewStepSigmas"]().get_sigmas(tiny_model, "SD1.5 8-step", 1.0, 5, 8, 5.0, 6, 1.2)[0]
        comfy.custom_sampler.SamplerCustom().sample(tiny_model, True, SEED, CFG, conditioning(1), conditioning(2),
                                                    sampler, eight, latent(8))


def test_unipcs_own_offsets_through_few_step_ksampler_are_unipc(comfy, tiny_model):
    """The text the fit starts a unipc_afs schedule from (DPM++2M's steps on noise predictions, afs=1, the offsets read
    off UniPC, written to 4 digits) samples what Few-Step KSampler samples with solver=unipc_afs, to the rounding of
    the text, far closer than DPM++2M with afs does."""
    unipc_text = TEXT.replace("dpmpp_2m", "unipc_afs")
    params = parse_params(unipc_text)
    table = tiny_model.model.model_sampling.sigmas.double().cpu()
    solver = make_plan(CUSTOM, params=unipc_text).solver
    offsets = equivalent_offsets(solver, params.sigmas(table).tolist(), sigma_table=table, prediction="noise")
    own = format_params(dataclasses.replace(params, solver="dpmpp_2m", variant=None, order=None, afs=True,
                                            prediction="noise", weights=offsets))
    unipc = run_ksampler(comfy, tiny_model, unipc_text)
    gap = float((run_ksampler(comfy, tiny_model, own) - unipc).abs().max())
    assert gap < 1e-2 * float(unipc.abs().max())
    assert gap < 0.1 * float((run_ksampler(comfy, tiny_model, TEXT + " afs=1") - unipc).abs().max())
