"""Smoke test of the quality proxy (benchmarks/quality.py): its analytic model and a quick run in process."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch
from conftest import REPO


def _load_quality():
    spec = importlib.util.spec_from_file_location("fewstep_bench_quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


def test_denoiser_is_tweedie_of_the_exact_density():
    """D(x, sigma) = x + sigma^2 grad log p_sigma(x), the gradient taken by autograd of the plain density."""
    mixture = quality.GaussianMixture.random(components=5, seed=3)
    generator = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.7, 6.0):
        x0 = mixture.sample(16, generator)
        x = (x0 + sigma * torch.randn(x0.shape, generator=generator, dtype=torch.float64)).requires_grad_()
        sigmas = torch.full((16,), sigma, dtype=torch.float64)
        (score,) = torch.autograd.grad(mixture.log_density(x, sigmas).sum(), x)
        expected = x.detach() + sigma ** 2 * score
        torch.testing.assert_close(mixture.denoise(x.detach(), sigmas), expected, rtol=1e-9, atol=1e-9)
        # the per-sample path (different sigmas in one batch) agrees with the shared-sigma path
        mixed = sigmas.clone()
        mixed[0] = sigma * (1 + 1e-12)
        torch.testing.assert_close(mixture.denoise(x.detach(), mixed), expected, rtol=1e-7, atol=1e-7)


def test_denoiser_matches_monte_carlo_posterior_mean():
    """On a small mixture, E[x0 | x] by self-normalised importance weights over prior samples."""
    mixture = quality.GaussianMixture.random(components=4, shape=(1, 2, 2), seed=1)
    generator = torch.Generator().manual_seed(2)
    prior = mixture.sample(400_000, generator)
    sigma = 0.6
    x = mixture.sample(6, generator) + sigma * torch.randn(6, 4, generator=generator, dtype=torch.float64)
    log_weights = -((x[:, None, :] - prior[None]) ** 2).sum(-1) / (2 * sigma ** 2)
    weights = torch.softmax(log_weights, dim=1)
    monte_carlo = weights @ prior
    exact = mixture.denoise(x, torch.full((6,), sigma, dtype=torch.float64))
    assert (monte_carlo - exact).abs().max() < 0.02


def test_frechet_distance_is_zero_for_the_exact_moments_and_grows_with_a_shift():
    mixture = quality.GaussianMixture.random(components=3, shape=(1, 4, 4), seed=0)
    mean, covariance = mixture.mean(), mixture.covariance()
    values, vectors = torch.linalg.eigh(covariance)
    root = (vectors * values.sqrt()) @ vectors.T
    samples = mixture.sample(20_000, torch.Generator().manual_seed(0))
    fd = quality.frechet_distance(samples, mean, root, float(covariance.trace()))
    assert 0 <= fd < 0.05
    shifted = quality.frechet_distance(samples + 0.5, mean, root, float(covariance.trace()))
    assert shifted == pytest.approx(fd + 0.25 * 16, rel=0.05)


@pytest.fixture(scope="module")
def quick(comfy):
    return quality.run(quality.QUICK)


def test_quick_run_is_finite_and_complete(quick):
    config = quick.config
    pack_at = {}
    for row in quick.rows:
        m = row.method
        assert len(row.fd) == config.seeds
        assert all(math.isfinite(v) for v in row.fd + row.rms_end + row.rms_zero), m.name
        if m.budget is not None:
            assert m.nfe <= m.budget, m.name
        if m.pack:
            pack_at.setdefault(m.budget, []).append(m.name)
    for budget in config.budgets:
        names = {row.method.name for row in quick.table(budget)}
        # every core pair of the quick subset, and the pack's methods, have a row at each budget
        for sampler in config.samplers:
            for scheduler in config.schedulers:
                assert f"{sampler} / {scheduler}" in names, (sampler, scheduler, budget)
        assert pack_at.get(budget), budget
    methods = {(row.method.name, row.method.budget): row.method for row in quick.rows}
    assert methods[("FewStep SD1.5 5-step", 5)].nfe == 5
    assert methods[("FewStep SD1.5 5-step + denoised", 6)].nfe == 6
    assert methods[("FewStep scheduler 7-step + denoised", 8)].nfe == 8
    # counted, not assumed: heun's last step to sigma 0 is a single Euler evaluation
    assert (methods[("heun / karras", 5)].steps, methods[("heun / karras", 5)].nfe) == (3, 5)
    assert (methods[("heun / karras", 8)].steps, methods[("heun / karras", 8)].nfe) == (4, 7)
    assert math.isclose(methods[("FewStep SD1.5 5-step", 5)].sigma_end, 0.132002, rel_tol=1e-3)
    assert quick.reference_check < 1e-3


def test_quick_run_orders_accuracy_sensibly(quick):
    rows = {(r.method.name, r.method.budget): r for r in quick.rows}
    baseline = quick.baseline()
    euler5 = rows[("euler / karras", 5)]
    mean = quality.Row.stats
    # 20 steps of DPM++2M are far closer to the exact ODE solution than 5 Euler steps
    assert mean(baseline.rms_zero)[0] < 0.5 * mean(euler5.rms_zero)[0]
    # exact samples set the floor no sampler can beat by much
    assert mean(quick.floor.fd)[0] < mean(euler5.fd)[0]
    assert quality.headline(quick)


def test_quick_run_reports_tuned_schedules(quick):
    """Each budget has a tuned row whose schedule came through Few-Step Sigmas' params input."""
    from fewstep.params import parse_params

    tuned = {r.method.budget: r for r in quick.rows if r.method.family == "FewStep tuned (dpmpp_2m)"}
    assert sorted(tuned) == sorted(quick.config.budgets)
    for tuning in quick.tunings:
        row = tuned[tuning.budget]
        assert row.method.nfe == tuning.budget and row.method.pack
        params = parse_params(tuning.result.text)
        assert params.steps == tuning.budget and params.solver == "dpmpp_2m"
        assert tuning.result.objective <= tuning.result.start_objective
        assert tuning.result.candidates == quick.config.tune_candidates
        assert len(row.method.sigmas) == tuning.budget + 1 and float(row.method.sigmas[-1]) > 0
    assert "### Tuned schedules" in quality.markdown(quick)
