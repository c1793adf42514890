"""Smoke test of the flow benchmark (benchmarks/quality_flow.py): the CONST-form analytic models, the model samplings
it builds as ComfyUI's nodes do, the tuner's flow reference, and a quick run in process (ComfyUI 0.3.64 only: PINNED
has no flow model sampling)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from conftest import REPO

sys.path.append(str(REPO / "benchmarks"))  # the benchmark's modules import each other by name, as its script does
import quality_flow  # noqa: E402
import quality_models  # noqa: E402


@pytest.fixture(scope="module")
def flow_comfy(comfy):
    """ComfyUI with the pack loaded, as the benchmark loads it; skipped where ComfyUI has no flow model sampling."""
    import comfy.model_sampling

    if not hasattr(comfy.model_sampling, "CONST"):
        pytest.skip("PINNED ComfyUI has no flow model sampling (CONST): the flow benchmark is 0.3.64-only")
    from quality_methods import load_comfyui

    return load_comfyui()


@pytest.mark.parametrize("name", ["anisotropic", "spheres"])
def test_const_denoiser_is_the_eps_one_rescaled_and_the_mean_at_pure_noise(name):
    """D(x, s) of x = (1 - s) x0 + s eps is D_eps(x / (1 - s), s / (1 - s)); E[x0] at s = 1."""
    mixture = quality_models.MODELS[name][1](0)
    flow = quality_flow.FlowMixture(mixture)
    x = torch.randn(8, flow.dims, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for s in (0.1, 0.5, 0.97):
        sigma = torch.full((8,), s, dtype=torch.float64)
        torch.testing.assert_close(flow.denoise(x, sigma), mixture.denoise(x / (1 - s), sigma / (1 - s)))
    at_one = flow.denoise(x, torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(at_one, mixture.mean().expand_as(at_one))


def test_flux_shift_is_the_nodes_at_1024():
    assert quality_flow.flux_shift(1024, 1024) == pytest.approx(1.15)
    assert quality_flow.flux_shift(256, 256) == pytest.approx(0.5 + (1.15 - 0.5) * (256 - 256) / 3840)


def test_the_tuners_flow_reference_is_close_to_the_exact_solution(flow_comfy):
    """40 DPM++2M steps on the tuner's flow reference schedule land within 0.02 RMS of an RK4 solution of the same ODE
    (Karras in sigma from 1 landed 0.19 to 0.22 away on these models)."""
    from types import SimpleNamespace

    from fewstep.plan import solver_named
    from fewstep.tuner_objective import distance, reference_sigmas

    ms = quality_flow.flow_model_sampling("sd3")
    mixture = quality_flow.FlowMixture(quality_models.MODELS["clustered"][1](0))
    harness = quality_flow.FlowHarness(SimpleNamespace(**{**vars(flow_comfy), "extras": {}}), mixture, ms)
    table = harness.tuning_table()
    assert float(table[-1]) == 1.0 and float(table[0]) == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-6)
    noise = torch.randn((8, *quality_models.LATENT_SHAPE), generator=torch.Generator().manual_seed(5))
    run = harness.analytic_denoiser(noise, lambda d, x: harness.tuning_run(d, x, table))
    exact = quality_models.reference_solution(mixture, noise.double(), 1.0, set(), 200)[0.0]
    ours = run(reference_sigmas(table, 40), solver_named("dpmpp_2m")).reshape(8, -1).double()
    assert distance(ours, exact) < 0.02


def test_quick_run_ranks_the_pack_against_core_pairs_on_flow_models(flow_comfy):
    from dataclasses import replace

    config = replace(quality_flow.QUICK, budgets=(6,), ranked_budgets=(6,), samples=96, tune_candidates=15,
                     tune_probes=8, samplers=("euler", "dpmpp_2m"), schedulers=("simple", "beta"))
    suite = quality_flow.run_flow(config, flow_comfy)
    assert [r.model for r in suite.models] == ["anisotropic_sd3", "clustered_flux"]
    for results in suite.models:
        table = results.table(6)
        names = {r.method.name for r in table}
        assert {"euler / simple", "dpmpp_2m / beta", "FewStep tuned (auto)"} <= names
        assert all(r.method.nfe <= 6 for r in table)
        assert all(math.isfinite(v) for r in table for v in r.fd + r.rms_zero)
        assert results.baseline().method.name.startswith("euler / simple, 20 steps")


def test_bench_flow_tunes_its_trend_budgets_as_far_as_its_ranked_ones():
    """bench-quality's shorter search at the trend budgets (10, 12) is not bench-flow's: its runs keep the 300
    candidates docs/quality_flow.md was made with at every budget."""
    from quality_tuning import candidates

    assert [candidates(quality_flow.FLOW, budget) for budget in quality_flow.FLOW.budgets] == [300] * 5
