"""The solvers in both noise forms (issue 23, section 2; docs/noise_forms.md): eps, x = x0 + sigma eps, and const,
x = (1 - sigma) x0 + sigma eps (flow matching), stepping in the form's half-log-SNR lambda.

1. A constant denoiser D(x, sigma) = c is solved to 1e-10 (float64) against the closed form, in both forms, for
   DPM++1S, DPM++2M and UniPC (bh1 / bh2, orders 1-3, noise and data prediction), on schedules of 5, 6 and 8
   evaluations ending above 0 and at 0, const ones from sigma = 1 and from below it. With the analytical first
   step (AFS) the first output is the prior's estimate, not c, so what is asserted is stated per case (3.).
2. The const steps are not the eps steps (DPM++2M and UniPC differ on a non-linear denoiser; DPM++1S is the same
   step in both forms, by the algebra of docs/noise_forms.md).
3. A linear-Gaussian data model (x0 ~ N(0, s^2 I)), whose exact denoiser and ODE solution are known in each form:
   every solver with many steps converges to the exact solution.
4. The default (eps) is bit-identical to the eps steps as they were (explicit eps, a straight DPM++2M in
   -log sigma), and noise_form flows from the plan's Solver through sample / sample_solver.
"""

import math

import pytest
import torch

from fewstep.noise_forms import half_log_snr, signal_scale
from fewstep.plan import PlanError, Solver, dpmpp_solver, solver_named, unipc_solver
from fewstep.recipes import RECIPES
from fewstep.sampling import sample, sample_solver
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.solvers import dpmpp_2m_step, sample_fewstep
from fewstep.unipc import afs_estimate, afs_midpoint, sample_unipc


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """Tensors made here without a dtype are float64 (the 1e-10 checks); other test files keep their default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

FLUX_LIKE_SHIFT = 3.0


def shifted(t: float, shift: float = FLUX_LIKE_SHIFT) -> float:
    """SD3's time shift: sigma(t) = shift t / (1 + (shift - 1) t)."""
    return shift * t / (1.0 + (shift - 1.0) * t)


KARRAS_8 = [(14.6146 ** (1 / 7) + i / 8 * (0.0292 ** (1 / 7) - 14.6146 ** (1 / 7))) ** 7 for i in range(9)]
SCHEDULES = {
    # eps: 5 evaluations ending above 0 (the SD1.5 5-step recipe), 6 ending at 0, 8 ending above 0
    "eps-5": ("eps", [14.6146, 4.51885, 1.96154, 1.00098, 0.501515, 0.132002]),
    "eps-6-to-0": ("eps", [14.6146, 5.2124, 2.4311, 1.3238, 0.7560, 0.3937, 0.0]),
    "eps-8": ("eps", KARRAS_8),
    # const: from sigma = 1 (a flow txt2img start) to a small sigma, to 0, and from below 1 (img2img, a start < 1)
    "const-5-from-1": ("const", [1.0, 0.8, 0.55, 0.3, 0.12, 0.03]),
    "const-6-from-1-to-0": ("const", [shifted(1.0 - j / 6) for j in range(6)] + [0.0]),
    "const-8-from-1": ("const", [shifted(1.0 - j * 0.12) for j in range(9)]),
    "const-6-below-1": ("const", [0.93, 0.8, 0.62, 0.45, 0.28, 0.14, 0.05]),
}

SOLVERS = [("dpmpp_1s", {}), ("dpmpp_2m", {})] + [
    ("unipc", {"order": order, "variant": variant, "prediction": prediction})
    for order in ("1", "2", "3") for variant in ("bh1", "bh2") for prediction in ("noise", "data")]


def solver_id(entry):
    name, options = entry
    return "-".join([name, *options.values()])


def run(entry, model, x, sigmas, form, afs=False, **extra):
    name, options = entry
    sigmas = torch.tensor(sigmas, dtype=torch.float64)
    if name == "unipc":
        return sample_unipc(model, x, sigmas, disable=True, afs=afs, noise_form=form, **options, **extra)
    return sample_fewstep(model, x, sigmas, disable=True, solver=name, noise_form=form, **extra)


class Constant:
    """D(x, sigma) = c, recording (sigma, x) of every evaluation."""

    def __init__(self, c):
        self.c, self.calls = c, []

    def __call__(self, x, sigma, **extra):
        self.calls.append((float(sigma[0]), x.clone()))
        return self.c.expand_as(x).clone()


def closed_form(form, c, x_t, sigma_t, sigma):
    """The ODE's solution for D = c: eps x = c + (s/s_T)(x_T - c); const x = (1 - s) c + (s/s_T)(x_T - (1 - s_T) c)
    (the same function: dx/dsigma = (x - D) / sigma in both forms)."""
    if form == "eps":
        return c + (sigma / sigma_t) * (x_t - c)
    return (1.0 - sigma) * c + (sigma / sigma_t) * (x_t - (1.0 - sigma_t) * c)


def start(form, sigma_0, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    c = 0.7 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) + 0.2
    if form == "eps":
        return noise * math.sqrt(1.0 + sigma_0 ** 2), c  # ComfyUI's EPS start latent at full denoise
    return sigma_0 * noise + (1.0 - sigma_0) * c, c  # ComfyUI's CONST noise_scaling (an img2img start below 1)


def on_trajectory(form, c, points, output, sigma_end):
    """Whether every (sigma, x) after the first of ``points`` and (sigma_end, output) lie on the closed-form
    trajectory through the first, to 1e-10."""
    sigma_k, x_k = points[0]
    return all(torch.allclose(x_j, closed_form(form, c, x_k, sigma_k, s_j), rtol=0.0, atol=1e-10)
               for s_j, x_j in [*points[1:], (sigma_end, output)])


# --- 1. the constant denoiser, exact ------------------------------------------------------------------------

def test_the_closed_forms_agree():
    c, x_t = torch.tensor([0.3, -1.2]), torch.tensor([0.9, 0.4])
    for sigma_t, sigma in ((1.0, 0.4), (0.8, 0.0), (0.5, 0.05)):
        assert torch.allclose(closed_form("eps", c, x_t, sigma_t, sigma), closed_form("const", c, x_t, sigma_t, sigma),
                              rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("entry", SOLVERS, ids=solver_id)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_a_constant_denoiser_is_solved_exactly(schedule, entry):
    form, sigmas = SCHEDULES[schedule]
    x_t, c = start(form, sigmas[0])
    model = Constant(c)
    out = run(entry, model, x_t, sigmas, form)
    assert torch.isfinite(out).all()
    expected = closed_form(form, c, x_t, sigmas[0], sigmas[-1])
    assert torch.allclose(out, expected, rtol=0.0, atol=1e-10), float((out - expected).abs().max())
    assert len(model.calls) == len(sigmas) - 1
    for sigma, x in model.calls:  # every point the model sees is on the exact trajectory
        assert torch.allclose(x, closed_form(form, c, x_t, sigmas[0], sigma), rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("entry", [e for e in SOLVERS if e[0] == "unipc"], ids=solver_id)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_afs_is_exact_when_the_model_agrees_with_its_estimate(schedule, entry):
    """AFS replaces the first output by the prior's estimate D_hat(x_T, sigma_0); a constant model with c = D_hat
    (0 at sigma = 1 in the const form) is then solved exactly, the estimate's step included."""
    form, sigmas = SCHEDULES[schedule]
    x_t, _ = start(form, sigmas[0])
    c = afs_estimate(x_t, sigmas[0], form)[1]
    model = Constant(c)
    out = run(entry, model, x_t, sigmas, form, afs=True)
    assert len(model.calls) == len(sigmas) - 1
    assert torch.allclose(out, closed_form(form, c, x_t, sigmas[0], sigmas[-1]), rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("entry", [e for e in SOLVERS if e[0] == "unipc"], ids=solver_id)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_afs_with_any_constant_is_exact_once_the_estimate_is_out_of_the_steps(schedule, entry):
    """With a general c (not the estimate), the steps that use the estimate are not exact for c. Asserted:
    - const from sigma = 1: the estimate (D = 0) is used by the first step only (which has no corrector, and a
      point at lambda = -inf is in no later difference): from the first evaluation on, every evaluated point and
      the output lie on the exact trajectory; the first evaluated point is sigma_m x_T (the exact step for D = 0);
    - else, data prediction: from evaluation order + 1 on (when the estimate has left the differences);
    - else, noise prediction: nothing (its outputs at the predicted points, where the model is evaluated, differ
      from those at the corrected points once a step was not exact), only finite."""
    form, sigmas = SCHEDULES[schedule]
    name, options = entry
    x_t, c = start(form, sigmas[0])
    model = Constant(c)
    out = run(entry, model, x_t, sigmas, form, afs=True)
    assert torch.isfinite(out).all() and len(model.calls) == len(sigmas) - 1
    if form == "const" and sigmas[0] == 1.0:
        sigma_m, x_m = model.calls[0]
        assert torch.allclose(x_m, sigma_m * x_t, rtol=0.0, atol=1e-12)
        assert on_trajectory(form, c, model.calls, out, sigmas[-1])
    elif options["prediction"] == "data":
        order = int(options["order"])
        assert on_trajectory(form, c, model.calls[order:], out, sigmas[-1])
        assert not on_trajectory(form, c, model.calls[order - 1:], out, sigmas[-1])  # the estimate mattered


# --- 2. the const steps are not the eps steps ----------------------------------------------------------------

def toy(x, sigma, **extra):
    s = sigma.view(-1, 1, 1, 1)
    return 0.8 * torch.tanh(x / (1.0 + s)) + 0.1 * torch.sin(3.0 * x) / (1.0 + s ** 2) + 0.05 * x / (1.0 + s)


# the same algebra in both forms: DPM++1S (alpha' (1 - e^-h) = 1 - s'/s), and UniPC order 1 bh2 with the data
# prediction, whose corrector adds -alpha' B(-h) / 2 (D' - D) = (1 - s'/s) / 2 (D' - D) in both
FORM_FREE = {"dpmpp_1s", "unipc-1-bh2-data"}


@pytest.mark.parametrize("entry", SOLVERS, ids=solver_id)
def test_the_const_steps_are_not_the_eps_steps(entry):
    sigmas = SCHEDULES["const-6-below-1"][1]
    x_t, _ = start("const", sigmas[0])
    eps, const = (run(entry, toy, x_t, sigmas, form) for form in ("eps", "const"))
    difference = float((eps - const).abs().max())
    if solver_id(entry) in FORM_FREE:
        assert difference < 1e-14
    else:
        assert difference > 1e-4


def test_the_first_order_step_is_the_exponential_integrator_step_in_each_form():
    """(s'/s) x + (1 - s'/s) D = (s'/s) x + alpha' (1 - e^-h) D with h = lambda' - lambda of each form."""
    for form in ("eps", "const"):
        for sigma, sigma_next in ((0.9, 0.6), (0.5, 0.1), (0.2, 0.01)):
            h = half_log_snr(sigma_next, form) - half_log_snr(sigma, form)
            assert math.isclose(signal_scale(sigma_next, form) * -math.expm1(-h), 1.0 - sigma_next / sigma,
                                rel_tol=1e-13)


def test_dpmpp_2m_from_and_after_sigma_1():
    """From sigma = 1 the step is x' = s' x + (1 - s') D; the next one is first order (r = inf: D_d = D)."""
    x, d, d_previous = torch.tensor([0.7, -1.1]), torch.tensor([0.2, 0.3]), torch.tensor([5.0, -4.0])
    first = dpmpp_2m_step(x, d, None, None, 1.0, 0.6, "const")
    assert torch.allclose(first, 0.6 * x + 0.4 * d, rtol=0.0, atol=1e-15)
    second = dpmpp_2m_step(first, d, d_previous, 1.0, 0.6, 0.3, "const")
    assert torch.allclose(second, 0.5 * first + 0.5 * d, rtol=0.0, atol=1e-15)
    assert torch.isfinite(second).all()


def test_const_refuses_sigmas_above_1_and_an_unknown_form_is_named():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="at most 1"):
        sample_fewstep(toy, x, torch.tensor([1.5, 0.5]), disable=True, noise_form="const")
    with pytest.raises(ValueError, match="at most 1"):
        sample_unipc(toy, x, torch.tensor([1.5, 0.5]), disable=True, noise_form="const")
    with pytest.raises(ValueError, match="noise_form = 'flow'"):
        sample_fewstep(toy, x, torch.tensor([0.9, 0.5]), disable=True, noise_form="flow")


def test_afs_estimate_and_midpoint_in_the_const_form():
    x = torch.tensor([0.5, -2.0])
    eps, d = afs_estimate(x, 1.0, "const")
    assert torch.equal(eps, x) and torch.equal(d, torch.zeros(2))  # pure noise: eps = x, D = the prior mean 0
    for sigma in (0.99, 0.6, 0.2):  # x = alpha D + sigma eps, and eps = x / sqrt(alpha^2 + sigma^2)
        eps, d = afs_estimate(x, sigma, "const")
        assert torch.allclose((1 - sigma) * d + sigma * eps, x, rtol=0.0, atol=1e-15)
        assert torch.allclose(eps, x / math.hypot(1 - sigma, sigma), rtol=0.0, atol=1e-15)
    assert afs_midpoint(1.0, 0.6, None, "const") == 0.8  # the unshifted flow time t = sigma
    unshifted = torch.arange(1, 1001, dtype=torch.float64) / 1000  # ComfyUI's DiscreteFlow table at shift 1
    assert math.isclose(afs_midpoint(1.0, 0.6, unshifted, "const"), 0.8, rel_tol=1e-5)
    table = torch.tensor([shifted(t / 1000) for t in range(1, 1001)])  # shift 3: the midpoint in t, not sigma
    expected = shifted((1.0 + 0.5) / 2)
    assert math.isclose(afs_midpoint(1.0, shifted(0.5), table, "const"), expected, rel_tol=1e-5)


# --- 3. a linear-Gaussian data model converges to its exact ODE solution -----------------------------------

DATA_SCALE = 0.5


def gaussian_variance(form, sigma):
    """Var(x) at sigma for x0 ~ N(0, s^2 I): alpha^2 s^2 + sigma^2."""
    return signal_scale(sigma, form) ** 2 * DATA_SCALE ** 2 + sigma ** 2


def gaussian_denoiser(form):
    """The exact D = E[x0 | x] = alpha s^2 / (alpha^2 s^2 + sigma^2) x."""
    def model(x, sigma, **extra):
        s = float(sigma[0])
        return (signal_scale(s, form) * DATA_SCALE ** 2 / gaussian_variance(form, s)) * x
    return model


def dense(form, steps, end):
    """``steps`` steps to ``end`` (> 0), or to 0 after a last sigma that shrinks with the step count: eps from
    14.6146 (Karras, rho 7), const from 1 on SD3's shifted time (shift 3)."""
    low = end if end > 0 else 2.0 / steps
    if form == "eps":
        top = 14.6146 ** (1 / 7)
        values = [(top + i / steps * (low ** (1 / 7) - top)) ** 7 for i in range(steps + 1)]
    else:
        t_end = low / (FLUX_LIKE_SHIFT - (FLUX_LIKE_SHIFT - 1.0) * low)  # the inverse of the shift
        values = [shifted(1.0 - i / steps * (1.0 - t_end)) for i in range(steps + 1)]
    return values if end > 0 else values + [0.0]


def gaussian_error(form, entry, sigmas, seed=1):
    """The largest error of ``entry`` on the Gaussian model against x(sigma) = x_T sqrt(Var(sigma) / Var(sigma_T)),
    relative to the largest value of the exact solution."""
    x_t = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_t = x_t * math.sqrt(gaussian_variance(form, sigmas[0]))
    out = run(entry, gaussian_denoiser(form), x_t, sigmas, form)
    exact = x_t * math.sqrt(gaussian_variance(form, sigmas[-1]) / gaussian_variance(form, sigmas[0]))
    return float((out - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize("entry", SOLVERS, ids=solver_id)
@pytest.mark.parametrize("form", ["eps", "const"])
def test_a_linear_gaussian_model_converges_to_its_exact_solution(form, entry):
    """To sigma 0.02: at 800 steps within 5e-3 (DPM++1S, first order) or 5e-4 (the others; from sigma = 1 the
    first step is first order, so the const runs are at most second order), 32x more steps at least 8x nearer."""
    coarse, fine = (gaussian_error(form, entry, dense(form, steps, 0.02)) for steps in (25, 800))
    assert fine < (5e-3 if entry[0] == "dpmpp_1s" else 5e-4) and fine < coarse / 8.0, (coarse, fine)


@pytest.mark.parametrize("entry", [SOLVERS[0], SOLVERS[1], SOLVERS[-1]], ids=solver_id)
@pytest.mark.parametrize("form", ["eps", "const"])
def test_a_linear_gaussian_model_sampled_to_zero(form, entry):
    """To 0 (the last step returns D): x(0) = x_T s / sqrt(Var(sigma_T)), nearer with more steps."""
    coarse, fine = (gaussian_error(form, entry, dense(form, steps, 0.0), seed=2) for steps in (50, 800))
    assert fine < 5e-3 and fine < coarse / 4.0, (coarse, fine)


# --- 4. eps unchanged, and noise_form through the plan ---------------------------------------------------------

def straight_dpmpp_2m(model, x, sigmas):
    """DPM++2M in lambda = -log(sigma), in the operation order the pack has always used (RECIPES.md)."""
    values, previous = sigmas.tolist(), None
    for i in range(len(values) - 1):
        sigma, sigma_next = values[i], values[i + 1]
        d = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        if sigma_next == 0.0:
            x = d
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if previous is None:
                blended = d
            else:
                r = (math.log(values[i - 1]) - math.log(sigma)) / h
                blended = (1.0 + 1.0 / (2.0 * r)) * d - (1.0 / (2.0 * r)) * previous
            x = (sigma_next / sigma) * x - math.expm1(-h) * blended
        previous = d
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.solver == "dpmpp_2m"] + ["to zero"])
def test_eps_dpmpp_2m_is_bit_identical_to_the_straight_one(name, dtype):
    if name == "to zero":
        sigmas = torch.tensor(SCHEDULES["eps-6-to-0"][1], dtype=dtype)
    else:
        sigmas = recipe_sigmas(RECIPES[name], standard_sigma_table()).to(dtype)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=dtype) * float(sigmas[0])
    expected = straight_dpmpp_2m(toy, x, sigmas)
    assert torch.equal(sample_fewstep(toy, x, sigmas, disable=True, solver="dpmpp_2m"), expected)
    assert torch.equal(sample_fewstep(toy, x, sigmas, disable=True, solver="dpmpp_2m", noise_form="eps"), expected)


@pytest.mark.parametrize("name", list(RECIPES))
def test_the_default_is_eps_bit_for_bit_for_every_recipe(name):
    recipe = RECIPES[name]
    sigmas = recipe_sigmas(recipe, standard_sigma_table())
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6)) * float(sigmas[0])
    default = sample_solver(toy, x, sigmas, disable=True, solver=recipe.solver)
    explicit = sample_solver(toy, x, sigmas, disable=True, solver=recipe.solver, noise_form="eps")
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("options", [{"order": o, "variant": v, "afs": a, "prediction": p}
                                     for o in ("auto", "1", "2", "3") for v in ("bh1", "bh2")
                                     for a in (False, True) for p in ("noise", "data")])
def test_eps_unipc_default_equals_explicit_eps(options):
    sigmas = torch.tensor(SCHEDULES["eps-8"][1], dtype=torch.float32)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7)) * float(sigmas[0])
    assert torch.equal(sample_unipc(toy, x, sigmas, disable=True, **options),
                       sample_unipc(toy, x, sigmas, disable=True, noise_form="eps", **options))


def test_noise_form_flows_from_the_plan():
    assert Solver().noise_form == "eps" and solver_named("unipc_afs").noise_form == "eps"
    assert solver_named("dpmpp_2m", noise_form="const") == Solver("dpmpp_2m", noise_form="const")
    assert solver_named("unipc_afs", noise_form="const") == Solver("unipc", afs=True, noise_form="const")
    assert dpmpp_solver("dpmpp_2m", "denoised", "const").noise_form == "const"
    assert unipc_solver("2", "bh2", True, "last_sigma", "data", "const").noise_form == "const"
    with pytest.raises(PlanError) as error:
        solver_named("unipc", noise_form="flow")
    assert error.value.input == "noise_form" and "'eps', 'const'" in str(error.value)
    sigmas = torch.tensor(SCHEDULES["const-8-from-1"][1])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    for solver in (Solver("dpmpp_2m", noise_form="const"), Solver("unipc", order="2", afs=True, noise_form="const")):
        direct = (sample_fewstep(toy, x, sigmas, disable=True, solver=solver.name, noise_form="const")
                  if not solver.unipc else
                  sample_unipc(toy, x, sigmas, disable=True, order="2", afs=True, noise_form="const"))
        assert torch.equal(sample(toy, x, sigmas, disable=True, solver=solver), direct)
        assert torch.isfinite(direct).all()
