"""The solver updates against a straight float64 re-implementation of RECIPES.md's formulas."""

import math

import numpy as np
import pytest
import torch

from fewstep.recipes import RECIPES
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.solvers import SOLVERS, sample_fewstep


class ToyDenoiser:
    """A smooth nonlinear D(x, sigma) that counts its evaluations."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, **extra):
        self.calls.append(float(sigma[0]))
        s = sigma.view(-1, 1, 1, 1)
        return torch.tanh(x / (1.0 + s)) * 0.8 + 0.1 * torch.sin(3.0 * x) / (1.0 + s ** 2)


def toy_numpy(x, s):
    return np.tanh(x / (1.0 + s)) * 0.8 + 0.1 * np.sin(3.0 * x) / (1.0 + s ** 2)


def reference(x, sigmas, solver):
    """RECIPES.md, line by line, in float64 numpy."""
    x = x.copy()
    prev_d = None
    for i in range(len(sigmas) - 1):
        s, s2 = sigmas[i], sigmas[i + 1]
        d = toy_numpy(x, s)
        if solver == "dpmpp_1s":
            x = (s2 / s) * x + (1 - s2 / s) * d
        else:
            h = -math.log(s2) + math.log(s)
            if prev_d is None:
                dd = d
            else:
                r = (-math.log(s) + math.log(sigmas[i - 1])) / h
                dd = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * prev_d
            x = (s2 / s) * x - math.expm1(-h) * dd
        prev_d = d
    return x


@pytest.mark.parametrize("name", [name for name, r in RECIPES.items() if r.solver in SOLVERS])
def test_solver_equals_reimplementation(name):
    r = RECIPES[name]
    sigmas = recipe_sigmas(r, standard_sigma_table()).double()
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * float(sigmas[0])
    model = ToyDenoiser()
    ours = sample_fewstep(model, x0, sigmas, disable=True, solver=r.solver)
    expected = reference(x0.numpy(), sigmas.tolist(), r.solver)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-10)
    assert len(model.calls) == r.steps  # NFE = N


def test_2m_last_step_is_second_order():
    sigmas = recipe_sigmas(RECIPES["SD1.5 8-step"], standard_sigma_table()).double()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 14.6
    ours = sample_fewstep(ToyDenoiser(), x0, sigmas, disable=True, solver="dpmpp_2m")
    # a run whose last step is first order (as if the schedule ended at zero) must differ
    x7 = sample_fewstep(ToyDenoiser(), x0, sigmas[:-1], disable=True, solver="dpmpp_2m")
    first_order_last = reference(x7.numpy(), [float(sigmas[-2]), float(sigmas[-1])], "dpmpp_2m")
    assert np.abs(ours.numpy() - first_order_last).max() > 1e-4


def test_zero_ending_schedule_finishes_on_the_prediction():
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0], dtype=torch.float64)
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64) * 14.6
    for solver in ("dpmpp_1s", "dpmpp_2m"):
        model = ToyDenoiser()
        out = sample_fewstep(model, x0, sigmas, disable=True, solver=solver, finish="denoised")
        assert len(model.calls) == 3 and torch.isfinite(out).all()  # no extra evaluation at sigma 0


def test_finish_denoised_costs_one_evaluation_and_returns_the_prediction():
    sigmas = recipe_sigmas(RECIPES["SD1.5 5-step"], standard_sigma_table()).double()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 14.6
    model = ToyDenoiser()
    seen = []
    out = sample_fewstep(model, x0, sigmas, disable=True, solver="dpmpp_1s", finish="denoised",
                         callback=lambda info: seen.append(info["i"]))
    last = sample_fewstep(ToyDenoiser(), x0, sigmas, disable=True, solver="dpmpp_1s")
    assert len(model.calls) == 6 and model.calls[-1] == pytest.approx(float(sigmas[-1]))
    assert seen == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(out.numpy(), toy_numpy(last.numpy(), float(sigmas[-1])), rtol=1e-12)


def test_bad_solver_and_finish_are_named():
    sigmas = torch.tensor([1.0, 0.5])
    with pytest.raises(ValueError, match="solver"):
        sample_fewstep(ToyDenoiser(), torch.zeros(1, 1, 2, 2), sigmas, solver="euler")
    with pytest.raises(ValueError, match="finish"):
        sample_fewstep(ToyDenoiser(), torch.zeros(1, 1, 2, 2), sigmas, finish="zero")


@pytest.mark.parametrize("sigmas, problem", [
    ([14.6, 1.0, 1.0, 0.1], "step 2 of 3 does not lower sigma by at least 0.01 %"),
    ([14.6, 1.0, 0.99995, 0.1], "step 2 of 3 does not lower sigma by at least 0.01 %"),
    ([0.1, 1.0, 14.6], "steps 1 to 2 of 2 do not lower sigma"),
    ([14.6, float("nan"), 0.1], "sigmas[1] = nan; sigmas must be finite and above 0"),
    ([14.6, 1.0, -0.1], "sigmas[2] = -0.1; sigmas must be finite and above 0"),
    ([14.6, 0.0, 0.0], "sigmas[1] = 0"),
])
@pytest.mark.parametrize("solver", ["dpmpp_1s", "dpmpp_2m"])
def test_a_schedule_that_cannot_be_sampled_is_refused_before_any_evaluation(sigmas, problem, solver):
    model = ToyDenoiser()
    with pytest.raises(ValueError, match="^sigmas: " + problem.replace("(", r"\(").replace("[", r"\[")):
        sample_fewstep(model, torch.zeros(1, 4, 2, 2), torch.tensor(sigmas), disable=True, solver=solver)
    assert model.calls == []


@pytest.mark.parametrize("solver", ["dpmpp_1s", "dpmpp_2m"])
def test_a_trailing_zero_and_a_single_sigma_are_fine(solver):
    model = ToyDenoiser()
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = sample_fewstep(model, x * 14.6, torch.tensor([14.6, 2.0, 0.5, 0.0]), disable=True, solver=solver)
    assert len(model.calls) == 3 and torch.isfinite(out).all()
    assert torch.equal(sample_fewstep(model, x, torch.tensor([3.0]), disable=True, solver=solver), x)
