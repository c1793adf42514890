"""UniPC (fewstep/unipc.py) and the Few-Step UniPC Sampler node: correctness evidence (issue 12, part 6).

1. A straight float64 numpy re-implementation of the UniPC update, written here from the UniPC paper's
   B(h) form (RECIPES.md "F-scheduler"; nothing of fewstep.unipc's coefficients is used), against ours
   at every model evaluation (the point it is evaluated at, i.e. the state after each step) and at the
   end: orders 1-3, bh1 / bh2, AFS on / off, noise and data form, a recipe ending above zero and a
   schedule ending at zero, on an analytic non-linear denoiser.
2. Order 1 without the corrector is DPM++1S (identity); with the corrector it is not.
3. An anchor outside our code: data form, order 3, bh1 / bh2, no AFS equals ComfyUI's own uni_pc /
   uni_pc_bh2 in SamplerCustom on the tiny real UNet.
4.-7. Inside ComfyUI: evaluation counts and sigmas (AFS midpoint on the model's own table, v-prediction
   + zero-terminal SNR included), Timed FreeU step windows by evaluation, KSampler's fewstep_unipc,
   input errors, finish="denoised".
"""

import math

import numpy as np
import pytest
import torch
from conftest import count_evaluations, latent
from test_comfy_nodes import core_sampler, node, record_backbone, sigmas, timed_freeu
from test_model_sampling import patched, reference_timesteps

from fewstep.recipes import RECIPES, recipe_for_step_count
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.solvers import sample_fewstep
from fewstep.unipc import afs_midpoint, sample_unipc

BETAS = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
STANDARD = np.sqrt((1.0 - np.cumprod(1.0 - BETAS)) / np.cumprod(1.0 - BETAS))


# --- the reference, from the formulas ------------------------------------------------------------

def toy(x, sigma):
    """An analytic denoiser D(x, sigma), non-linear in both (numpy float64 or torch)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    return 0.8 * lib.tanh(x / (1.0 + sigma)) + 0.1 * lib.sin(3.0 * x) / (1.0 + sigma ** 2) + 0.05 * x / (1.0 + sigma)


class RecordingToy:
    """The toy as a k-diffusion model, recording (sigma, x) of every evaluation."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, **extra):
        self.calls.append((float(sigma[0]), x.detach().clone().numpy()))
        return toy(x, sigma.view(-1, 1, 1, 1))


def timestep_of(sigma, table):
    """Continuous timestep: linear in log-sigma between the table's integer timesteps."""
    return float(np.interp(np.log(sigma), np.log(table), np.arange(len(table), dtype=np.float64)))


def sigma_of(t, table):
    """Sigma of a fractional timestep, alphas_cumprod interpolated linearly (the reference's rule)."""
    ac = 1.0 / (1.0 + table ** 2)
    t = min(max(t, 0.0), len(table) - 1.0)
    low, high = math.floor(t), math.ceil(t)
    mixed = ac[low] + (t - low) * (ac[high] - ac[low])
    return math.sqrt((1.0 - mixed) / mixed)


def midpoint(s0, s1, table=STANDARD):
    return sigma_of((timestep_of(s0, table) + timestep_of(s1, table)) / 2.0, table)


def phi(k, z):
    """phi_0(z) = e^z, phi_{k+1}(z) = (phi_k(z) - 1/k!) / z."""
    value = math.exp(z)
    for j in range(k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def rhos(hh, ratios, variant):
    """UniPC paper, B(h) form: R_p(h) a = g_p(h) / B(h) with R[i][k] = (r_k hh)^(i-1) and
    g_i = hh^i i! phi_{i+1}(hh), i = 1..p; the corrector's points are the r_k and 1. Returns
    (predictor a over the r_k, corrector a over the r_k and 1). UniP-2: a = 1/2; UniC-1: a = 1/2."""
    big_b = hh if variant == "bh1" else math.expm1(hh)
    points = list(ratios) + [1.0]
    p = len(points)
    R = np.array([[(r * hh) ** (i - 1) for r in points] for i in range(1, p + 1)])
    g = np.array([hh ** i * math.factorial(i) * phi(i + 1, hh) for i in range(1, p + 1)]) / big_b
    corrector = np.array([0.5]) if p == 1 else np.linalg.solve(R, g)
    if p == 1:
        predictor = np.zeros(0)
    elif p == 2:
        predictor = np.array([0.5])
    else:
        predictor = np.linalg.solve(R[:-1, :-1], g[:-1])
    return big_b, predictor, corrector


def reference_unipc(x, schedule, order, variant, afs, prediction, corrector=True, table=STANDARD):
    """UniPC in ComfyUI's variables (x = x0 + sigma eps, lambda = -log sigma, h = log(s / s')):
      noise: x' = x - s' [expm1(h) e0 + B(h) sum_k a_k D1_k]
      data:  x' = (s'/s) x - [expm1(-h) d0 + B(-h) sum_k a_k D1_k]
    D1_k = (m_k - m_0) / r_k, r_k = (lambda_k - lambda_0) / h. Returns (final x, [(sigma, x) evaluated])."""
    path = list(schedule)
    if afs:
        path.insert(1, midpoint(path[0], path[1], table))
    steps = len(path) - 1
    noise = prediction == "noise"
    evaluated = []

    def output(x_at, s):
        evaluated.append((s, x_at))
        d = toy(x_at, s)
        return (x_at - d) / s if noise else d

    if afs:
        eps = x / math.sqrt(1.0 + path[0] ** 2)
        history = [(path[0], eps if noise else x - path[0] * eps)]
    else:
        history = [(path[0], output(x, path[0]))]
    for i in range(1, steps + 1):
        s, s_next = path[i - 1], path[i]
        p = min(order, i, steps + 1 - i)
        m0 = history[-1][1]
        if s_next == 0.0:
            x = x - s * m0 if noise else m0
            break
        h = math.log(s / s_next)
        hh = h if noise else -h
        earlier = [history[-1 - k] for k in range(1, p)]
        ratios = [((-math.log(s_k)) - (-math.log(s))) / h for s_k, _ in earlier]
        d1 = [(m_k - m0) / r for (_, m_k), r in zip(earlier, ratios)]
        big_b, a_p, a_c = rhos(hh, ratios, variant)
        if noise:
            base, scale = x - s_next * math.expm1(h) * m0, s_next * big_b
        else:
            base, scale = (s_next / s) * x - math.expm1(-h) * m0, big_b
        predicted = base - scale * sum((a * d for a, d in zip(a_p, d1)), np.zeros_like(x))
        if i == steps:
            x = predicted
            break
        m_next = output(predicted, s_next)
        if corrector:
            x = base - scale * (sum((a * d for a, d in zip(a_c[:-1], d1)), np.zeros_like(x)) + a_c[-1] * (m_next - m0))
        else:
            x = predicted
        history.append((s_next, m_next))
    return x, evaluated


def numpy_recipe_sigmas(name):
    """A recipe's sigmas from RECIPES.md's definition on the standard table (numpy)."""
    r = RECIPES[name]
    return [sigma_of(t, STANDARD) for t in reference_timesteps(r.steps, r.base_steps, r.base_rho, r.end_index,
                                                                r.time_rho)]


ABOVE_ZERO = numpy_recipe_sigmas("SDXL 8-step UniPC")  # 8 evaluations: order 3 on 4 steps (5 with AFS)
KARRAS = [(14.6146 ** (1 / 7) + i / 6 * (0.0292 ** (1 / 7) - 14.6146 ** (1 / 7))) ** 7 for i in range(7)]
AT_ZERO = KARRAS + [0.0]  # 7 evaluations, the last step to 0


def start_latent(seed=3, sigma=14.6146):
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigma


# --- 1. against the re-implementation ------------------------------------------------------------

def test_schedules_used_here_are_recipes_md_sanity_values():
    """The inputs of the tests below: RECIPES.md's sigmas of (6; 12, 12.0, 10) and (8; 12, 12.0, 10), here from
    the definition in numpy, equal the pack's UniPC recipes."""
    six = [14.6146, 5.2124, 2.4311, 1.3238, 0.7560, 0.3937, 0.0600]
    eight = [14.6146, 6.5481, 3.4672, 2.0671, 1.3238, 0.8711, 0.5597, 0.3171, 0.0600]
    for name, pinned in (("SDXL 6-step UniPC", six), ("SDXL 8-step UniPC", eight)):
        np.testing.assert_allclose(numpy_recipe_sigmas(name), pinned, rtol=0, atol=6e-5)
        np.testing.assert_allclose(recipe_sigmas(RECIPES[name], standard_sigma_table()).double().numpy(),
                                   numpy_recipe_sigmas(name), rtol=2e-6)


def test_afs_midpoints_are_recipes_md_sanity_values():
    for name, t_mid, sigma_mid in (("SDXL 6-step UniPC", 901.645, 8.4192), ("SDXL 8-step UniPC", 925.65, 9.5775)):
        r = RECIPES[name]
        timesteps = reference_timesteps(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho)
        schedule = numpy_recipe_sigmas(name)
        t = (timestep_of(schedule[0], STANDARD) + timestep_of(schedule[1], STANDARD)) / 2.0
        # t of sigma_1 read back by log-sigma interpolation is within 1e-3 of the definition's timestep
        assert t == pytest.approx((timesteps[0] + timesteps[1]) / 2.0, abs=1e-3)
        assert t == pytest.approx(t_mid, abs=0.006)
        assert midpoint(schedule[0], schedule[1]) == pytest.approx(sigma_mid, abs=6e-5)
        assert afs_midpoint(schedule[0], schedule[1]) == pytest.approx(midpoint(schedule[0], schedule[1]), rel=1e-12)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("schedule", [ABOVE_ZERO, AT_ZERO], ids=["above_zero", "at_zero"])
@pytest.mark.parametrize("afs", [False, True], ids=["no_afs", "afs"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_equals_the_reimplementation_step_by_step(order, variant, afs, schedule, prediction):
    x = start_latent()
    model = RecordingToy()
    ours = sample_unipc(model, x, torch.tensor(schedule, dtype=torch.float64), disable=True, order=str(order),
                        variant=variant, afs=afs, prediction=prediction)
    expected, evaluated = reference_unipc(x.numpy(), schedule, order, variant, afs, prediction)
    assert len(model.calls) == len(evaluated) == len(schedule) - 1  # N evaluations, with or without AFS
    for k, ((sigma, x_ours), (sigma_ref, x_ref)) in enumerate(zip(model.calls, evaluated), start=1):
        assert sigma == pytest.approx(sigma_ref, rel=1e-13), f"evaluation {k}"
        np.testing.assert_allclose(x_ours, x_ref, rtol=1e-10, atol=1e-10, err_msg=f"evaluation {k}")
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule, afs, evaluations, order", [
    (numpy_recipe_sigmas("SDXL 6-step UniPC"), True, 6, 1), (numpy_recipe_sigmas("SD1.5 6-step UniPC"), False, 6, 1),
    (AT_ZERO, False, 7, 2), (AT_ZERO, True, 7, 2), (ABOVE_ZERO, True, 8, 2)])
def test_auto_order_is_1_up_to_6_evaluations_and_2_from_7(schedule, afs, evaluations, order):
    """"auto" counts model evaluations (N for N+1 sigmas, with AFS too), as the reference's recipes."""
    x = start_latent()
    model = RecordingToy()
    ours = sample_unipc(model, x, torch.tensor(schedule, dtype=torch.float64), disable=True, order="auto", afs=afs)
    expected, _ = reference_unipc(x.numpy(), schedule, order, "bh1", afs, "noise")
    assert len(model.calls) == evaluations
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_orders_variants_and_afs_really_differ_on_the_toy(prediction):
    """The comparison above is not vacuous: each setting changes the result by far more than its tolerance."""
    x = start_latent()
    results = {(o, v, a): sample_unipc(RecordingToy(), x, torch.tensor(ABOVE_ZERO, dtype=torch.float64),
                                       disable=True, order=str(o), variant=v, afs=a, prediction=prediction)
               for o in (1, 2, 3) for v in ("bh1", "bh2") for a in (False, True)}
    keys = list(results)
    gaps = {(a, b): float((results[a] - results[b]).abs().max()) for i, a in enumerate(keys) for b in keys[i + 1:]
            if sum(u != v for u, v in zip(a, b)) == 1}  # settings that differ in one of order, variant, afs
    # measured: at least 1.1e-3 (noise form), 1.7e-3 (data form), against the 1e-10 tolerance above
    assert len(gaps) == 24 and min(gaps.values()) > 5e-4, min(gaps.items(), key=lambda item: item[1])


# --- 2. order 1 without the corrector is DPM++1S ------------------------------------------------

@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_order_1_without_corrector_is_dpmpp_1s(prediction, variant):
    schedule = torch.tensor(ABOVE_ZERO, dtype=torch.float64)
    x = start_latent()
    plain = sample_unipc(RecordingToy(), x, schedule, disable=True, order="1", variant=variant, prediction=prediction,
                         corrector=False)
    dpmpp = sample_fewstep(RecordingToy(), x, schedule, disable=True, solver="dpmpp_1s")
    np.testing.assert_allclose(plain.numpy(), dpmpp.numpy(), rtol=1e-12, atol=1e-12)
    corrected = sample_unipc(RecordingToy(), x, schedule, disable=True, order="1", variant=variant,
                             prediction=prediction)
    assert float((corrected - dpmpp).abs().max()) > 5e-3  # measured: 0.054 / 0.073 (noise), 0.011 / 0.0088 (data)


# --- 3. anchor outside our code: ComfyUI's own uni_pc / uni_pc_bh2 --------------------------------

def sample(comfy, model, sampler, schedule, conds, seed=7, cfg=5.5):
    """SamplerCustom (ComfyUI's own node) on an 8x8 latent: (output, denoised_output)."""
    with torch.no_grad():
        out, denoised = comfy.custom_sampler.SamplerCustom().sample(
            model, True, seed, cfg, conds[0], conds[1], sampler, schedule, latent(8))
    return out["samples"], denoised["samples"]


def unipc_sampler(comfy, order="auto", variant="bh1", afs=False, finish="last_sigma", prediction="noise"):
    return node(comfy, "FewStepUniPCSampler").get_sampler(order, variant, afs, finish, prediction)[0]


@pytest.mark.parametrize("variant, core", [("bh2", "uni_pc_bh2"), ("bh1", "uni_pc")])
def test_data_form_order_3_equals_comfyuis_uni_pc(comfy, tiny_model, conds, variant, core):
    schedule = sigmas(comfy, tiny_model, "SD1.5 6-step UniPC")  # 6 steps above zero: ComfyUI's order min(3, 5) = 3
    x_ours, _ = sample(comfy, tiny_model, unipc_sampler(comfy, "3", variant, prediction="data"), schedule, conds)
    x_core, _ = sample(comfy, tiny_model, core_sampler(comfy, core), schedule, conds)
    torch.testing.assert_close(x_ours, x_core, rtol=1e-4, atol=1e-4)
    # measured: 7.6e-5 (bh2) and 1.1e-4 (bh1) at most, on outputs up to 237 (float32 round-off). Not vacuous:
    # order 2 differs from core by 0.23 / 0.36, the noise form by 3.1 / 0.50
    x_order_2, _ = sample(comfy, tiny_model, unipc_sampler(comfy, "2", variant, prediction="data"), schedule, conds)
    x_noise, _ = sample(comfy, tiny_model, unipc_sampler(comfy, "3", variant, prediction="noise"), schedule, conds)
    assert float((x_order_2 - x_core).abs().max()) > 0.05 and float((x_noise - x_core).abs().max()) > 0.05


# --- 4. evaluations counted inside ComfyUI ------------------------------------------------------

def test_n_evaluations_and_their_sigmas_with_and_without_afs(comfy, tiny_model, conds):
    schedule = sigmas(comfy, tiny_model, "SDXL 6-step UniPC")
    values = schedule.double().tolist()
    counted, calls = count_evaluations(tiny_model)
    sample(comfy, counted, unipc_sampler(comfy, afs=False), schedule, conds)
    np.testing.assert_allclose(calls, values[:-1], rtol=1e-6)
    calls.clear()
    sample(comfy, counted, unipc_sampler(comfy, afs=True), schedule, conds)
    assert len(calls) == 6
    assert calls[0] == pytest.approx(8.4192, abs=2e-4)  # RECIPES.md's AFS midpoint, not sigma_0 = 14.6146
    np.testing.assert_allclose(calls, [midpoint(values[0], values[1])] + values[1:-1], rtol=1e-6)
    assert not any(c == pytest.approx(values[-1], rel=1e-3) or c == pytest.approx(values[0], rel=1e-3) for c in calls)


def test_afs_midpoint_is_on_the_models_own_table(comfy, tiny_model, conds):
    model, ms = patched(comfy, tiny_model, "v_prediction", True)
    table = ms.sigmas.double().numpy()
    schedule = sigmas(comfy, model, "SDXL 6-step UniPC")
    values = schedule.double().tolist()
    assert values[0] > 4000  # zero-terminal SNR
    expected = midpoint(values[0], values[1], table)
    counted, calls = count_evaluations(model)
    out, _ = sample(comfy, counted, unipc_sampler(comfy, afs=True), schedule, conds)
    assert len(calls) == 6 and torch.isfinite(out).all()
    np.testing.assert_allclose(calls, [expected] + values[1:-1], rtol=1e-5)
    standard = midpoint(min(values[0], STANDARD[-1]), values[1], STANDARD)
    assert abs(expected / standard - 1) > 0.02  # the standard table would place it elsewhere


# --- 5. Timed FreeU's step windows count evaluations ------------------------------------------

def factor_by_evaluation(model_with_freeu, comfy, sampler, schedule, conds):
    """Sample, recording the deep backbone before and after the patch; the factor per evaluation (1-based)."""
    last, seen = record_backbone(*model_with_freeu)
    sample(comfy, last, sampler, schedule, conds)
    evaluations = []
    for sigma, h_before, h_after in seen:
        if not evaluations or evaluations[-1][0] != sigma:
            evaluations.append((sigma, set()))
        half = h_before.shape[1] // 2
        assert torch.equal(h_after[:, half:], h_before[:, half:])
        evaluations[-1][1].add(round(float((h_after[:, :half] / h_before[:, :half]).median()), 4))
    assert all(len(factors) == 1 for _, factors in evaluations)
    return [sigma for sigma, _ in evaluations], {k: f.pop() for k, (_, f) in enumerate(evaluations, start=1)}


@pytest.mark.parametrize("afs", [False, True], ids=["no_afs", "afs"])
@pytest.mark.parametrize("steps, active", [((-3, -1), {4, 5, 6}), ((1, 2), {1, 2}), ((6, 6), {6})])
def test_timed_freeu_windows_are_evaluations(comfy, tiny_model, conds, afs, steps, active):
    schedule = sigmas(comfy, tiny_model, "SDXL 6-step UniPC")
    patch = (tiny_model, lambda m: timed_freeu(comfy, m, (1.5, 1.1, 0.9, 0.2), steps=steps))
    evaluated, factors = factor_by_evaluation(patch, comfy, unipc_sampler(comfy, afs=afs), schedule, conds)
    assert len(evaluated) == 6 and (evaluated[0] < float(schedule[0]) * 0.99) == afs
    assert factors == {k: (1.5 if k in active else 1.0) for k in range(1, 7)}


def test_recipe_freeu_is_on_the_last_three_evaluations(comfy, tiny_model, conds):
    r = RECIPES["SDXL 6-step UniPC"]
    schedule = sigmas(comfy, tiny_model, r.name)

    def chain(m):
        for s in r.freeu:
            m = timed_freeu(comfy, m, (s.b1, s.b2, s.s1, s.s2), steps=(s.first_step, s.last_step))
        return m

    _, factors = factor_by_evaluation((tiny_model, chain), comfy, unipc_sampler(comfy, afs=True), schedule, conds)
    assert factors == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.2, 5: 1.2, 6: 1.2}


# --- 6. KSampler and input errors ---------------------------------------------------------------

def test_ksampler_fewstep_unipc_is_registered_once_and_runs_n_evaluations(comfy, tiny_model, conds):
    names = comfy.nodes.KSampler.INPUT_TYPES()["required"]["sampler_name"][0]
    comfy.pack.nodes.registration.register()
    assert names is comfy.nodes.KSampler.INPUT_TYPES()["required"]["sampler_name"][0]
    assert names.count("fewstep_unipc") == 1
    counted, calls = count_evaluations(tiny_model)
    with torch.no_grad():
        via_ksampler = comfy.nodes.KSampler().sample(counted, 7, 6, 5.5, "fewstep_unipc", "fewstep", conds[0], conds[1],
                                                     latent(8))[0]["samples"]
    schedule = recipe_sigmas(recipe_for_step_count(6), standard_sigma_table())
    np.testing.assert_allclose(calls, schedule[:-1].double().numpy(), rtol=1e-5)
    via_node, _ = sample(comfy, tiny_model, unipc_sampler(comfy, "auto", "bh1", False, "last_sigma", "noise"),
                         schedule, conds)
    torch.testing.assert_close(via_ksampler, via_node, rtol=1e-5, atol=1e-5)
    calls.clear()  # and with a core scheduler, whose schedule ends at 0
    with torch.no_grad():
        out = comfy.nodes.KSampler().sample(counted, 7, 7, 5.5, "fewstep_unipc", "karras", conds[0], conds[1],
                                            latent(8))[0]["samples"]
    assert len(calls) == 7 and torch.isfinite(out).all()


@pytest.mark.parametrize("name, value, allowed", [
    ("order", "4", "['auto', '1', '2', '3']"), ("variant", "bh3", "['bh1', 'bh2']"),
    ("finish", "zero", "['last_sigma', 'denoised']"), ("prediction", "v", "['noise', 'data']")])
def test_node_names_a_bad_input_and_its_allowed_values(comfy, name, value, allowed):
    inputs = {"order": "auto", "variant": "bh1", "afs": False, "finish": "last_sigma", "prediction": "noise"}
    inputs[name] = value
    with pytest.raises(ValueError) as raised:
        node(comfy, "FewStepUniPCSampler").get_sampler(**inputs)
    assert str(raised.value) == f"Few-Step UniPC Sampler: {name} = {value!r} is not one of {allowed}"


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("bad", [[14.6, 3.0, 3.0, 0.5], [0.5, 3.0, 14.6]])
def test_a_schedule_that_is_not_strictly_descending_is_refused_before_any_evaluation(comfy, tiny_model, conds,
                                                                                     afs, bad):
    counted, calls = count_evaluations(tiny_model)
    with pytest.raises(ValueError, match=r"^Few-Step UniPC Sampler \(on KSampler: fewstep_unipc\): the SIGMAS input "
                                         r"cannot be sampled: .*do(es)? not lower sigma"):
        sample(comfy, counted, unipc_sampler(comfy, afs=afs), torch.tensor(bad), conds)
    assert calls == []


# --- 7. finish = "denoised" ---------------------------------------------------------------------

def test_finish_denoised_takes_one_more_evaluation_and_returns_d_there(comfy, tiny_model, conds):
    schedule = sigmas(comfy, tiny_model, "SD1.5 5-step UniPC")
    recorded = tiny_model.clone()
    records = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        records.append((float(args["timestep"].max()), args["input"].clone(), out.clone(),
                        list(args["cond_or_uncond"])))
        return out

    recorded.set_model_unet_function_wrapper(wrapper)
    x_last, _ = sample(comfy, recorded, unipc_sampler(comfy), schedule, conds)
    assert len(records) == 5
    records.clear()
    out, denoised = sample(comfy, recorded, unipc_sampler(comfy, finish="denoised"), schedule, conds)
    assert len(records) == 6 and records[-1][0] == pytest.approx(float(schedule[-1]), rel=1e-5)
    sigma, x_in, d_out, order = records[-1]
    inner = tiny_model.model
    for chunk in x_in.chunk(len(order)):  # evaluated at the latent the last_sigma run returns
        torch.testing.assert_close(inner.process_latent_out(chunk), x_last, rtol=1e-5, atol=1e-5)
    cond, uncond = (d_out.chunk(len(order))[order.index(k)] for k in (0, 1))
    guided = inner.process_latent_out(uncond + 5.5 * (cond - uncond))  # the returned latent is D there
    torch.testing.assert_close(out, guided, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, denoised)
    assert float((out - x_last).abs().max()) > 1e-2
