"""Smoke test of the quality proxy (benchmarks/quality*.py): its analytic models and a quick run in process."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy
import pytest
import torch
from conftest import REPO

sys.path.append(str(REPO / "benchmarks"))  # the benchmark's modules import each other by name, as its script does
import quality_methods  # noqa: E402
import quality_models  # noqa: E402
import quality_ranking  # noqa: E402
import quality_report  # noqa: E402

MODELS = {
    "anisotropic": lambda: quality_models.GaussianMixture.random(components=5, seed=3),
    "clustered": lambda: quality_models.GaussianMixture.clustered(4, 3, seed=3),
    "spheres": lambda: quality_models.SphereMixture.random(components=4, seed=3),
}


@pytest.mark.parametrize("name", MODELS)
def test_denoiser_is_tweedie_of_the_exact_density(name):
    """D(x, sigma) = x + sigma^2 grad log p_sigma(x), the gradient taken by autograd of the plain density."""
    mixture = MODELS[name]()
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


@pytest.mark.parametrize("name", MODELS)
def test_models_have_unit_average_variance_and_their_stated_moments(name):
    """The exact mean and covariance the FD uses agree with 200k samples; the average variance is 1."""
    model = MODELS[name]()
    samples = model.sample(200_000, torch.Generator().manual_seed(4))
    covariance = model.covariance()
    assert float(covariance.diagonal().mean()) == pytest.approx(1.0, rel=1e-9)
    assert (samples.mean(0) - model.mean()).abs().max() < 0.03
    assert (torch.cov(samples.T) - covariance).abs().max() < 0.05
    if name == "spheres":  # data on 3 circles and 2 spheres' worth of subspaces: rank K (k + 1) - 1 at most
        assert int((torch.linalg.eigvalsh(covariance) > 1e-9).sum()) <= 4 * 4 - 1
        # every sample lies on its sphere: some component has |x - c| = r and x - c inside its subspace
        x = samples[:1000]
        on = [((x - c) - (x - c) @ u @ u.T).norm(dim=1).lt(1e-9) & ((x - c).norm(dim=1) - r).abs().lt(1e-9)
              for c, r, u in zip(model.centres, model.radii, model.bases)]
        assert bool(torch.stack(on).any(0).all())


def test_sphere_denoiser_matches_quadrature_over_the_spheres():
    """E[x0 | x] by quadrature over each circle (trapezoid in the angle) and 2-sphere (Gauss-Legendre in the
    polar cosine x trapezoid in the azimuth), independent of the closed form's Bessel / coth ratios."""
    model = quality_models.SphereMixture.random(components=4, seed=5)
    nodes, weights = [], []
    for w, c, r, u in zip(model.weights, model.centres, model.radii, model.bases):
        if u.shape[1] == 2:
            angle = torch.arange(720, dtype=torch.float64) * (2 * math.pi / 720)
            s = torch.stack([angle.cos(), angle.sin()], 1)
            q = torch.full((720,), 1.0 / 720, dtype=torch.float64)
        else:
            cosine, legendre = (torch.from_numpy(a) for a in numpy.polynomial.legendre.leggauss(200))
            azimuth = torch.arange(400, dtype=torch.float64) * (2 * math.pi / 400)
            sine = (1 - cosine ** 2).sqrt()
            s = torch.stack([sine[:, None] * azimuth.cos(), sine[:, None] * azimuth.sin(),
                             cosine[:, None].expand(-1, 400)], -1).reshape(-1, 3)
            q = (legendre[:, None] / 2 / 400).expand(-1, 400).reshape(-1)
        nodes.append(c + r * s @ u.T)
        weights.append(w * q)
    nodes, weights = torch.cat(nodes), torch.cat(weights)
    generator = torch.Generator().manual_seed(6)
    for sigma in (0.3, 1.0, 4.0):
        x = model.sample(5, generator) + sigma * torch.randn(5, model.dims, generator=generator, dtype=torch.float64)
        log_posterior = weights.log() - torch.cdist(x, nodes) ** 2 / (2 * sigma ** 2)
        quadrature = torch.softmax(log_posterior, dim=1) @ nodes
        exact = model.denoise(x, torch.full((5,), sigma, dtype=torch.float64))
        torch.testing.assert_close(exact, quadrature, rtol=0, atol=1e-6)


def test_denoiser_matches_monte_carlo_posterior_mean():
    """On a small mixture, E[x0 | x] by self-normalised importance weights over prior samples."""
    mixture = quality_models.GaussianMixture.random(components=4, shape=(1, 2, 2), seed=1)
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
    mixture = quality_models.GaussianMixture.random(components=3, shape=(1, 4, 4), seed=0)
    mean, covariance = mixture.mean(), mixture.covariance()
    values, vectors = torch.linalg.eigh(covariance)
    root = (vectors * values.sqrt()) @ vectors.T
    samples = mixture.sample(20_000, torch.Generator().manual_seed(0))
    fd = quality_models.frechet_distance(samples, mean, root, float(covariance.trace()))
    assert 0 <= fd < 0.05
    shifted = quality_models.frechet_distance(samples + 0.5, mean, root, float(covariance.trace()))
    assert shifted == pytest.approx(fd + 0.25 * 16, rel=0.05)


@pytest.fixture(scope="module")
def suite(comfy):
    return quality_ranking.run(quality_methods.QUICK)


@pytest.fixture(scope="module")
def quick(suite):
    """The first model's results (the anisotropic mixture)."""
    return suite.model("anisotropic")


def test_the_models_run_in_worker_processes_score_as_one_after_another(suite, tmp_path):
    """With workers = 2 each model runs in a spawned process on 1 torch thread (the ComfyUI under test imported
    there): every row the quick run scored in this process (the learned fits left out: they stop on the clock) has
    the same FD and RMS to the digit, the models come back in the config's order, and the report names the workers.
    A worker's ceiling searches reach the parent's cache, which alone writes the file."""
    from quality_ceiling import Ceiling, CeilingCache

    config = replace(quality_methods.QUICK, workers=2, models=("anisotropic", "clustered"), learn_budgets=())
    cache = CeilingCache(tmp_path / "ceilings.json")
    parallel = quality_ranking.run(config, ceilings=cache)
    assert [r.model for r in parallel.models] == ["anisotropic", "clustered"]
    assert "2 worker processes of 1 torch thread" in parallel.machine
    for results in parallel.models:
        alone = {(r.method.name, r.method.budget): r for r in suite.model(results.model).rows}
        assert len(results.rows) > 20
        for row in results.rows:
            same = alone[(row.method.name, row.method.budget)]
            assert repr((row.fd, row.rms_end, row.rms_zero)) == repr((same.fd, same.rms_end, same.rms_zero))
    assert not (tmp_path / "ceilings.json").exists()  # QUICK runs no ceiling search

    worker = CeilingCache.in_memory({"kept": {"budget": 5}})
    found = Ceiling(5, "fewstep v1: steps=5", 0.1, 0.2, 10, 12, 1.0)
    worker.put("new", found)
    assert set(worker.entries) == {"kept", "new"} and list(worker.added) == ["new"]
    cache.put("new", Ceiling(**worker.added["new"]))
    assert CeilingCache(tmp_path / "ceilings.json").get("new") == found


def test_quick_run_ranks_every_model_separately(suite):
    assert [r.model for r in suite.models] == list(quality_models.MODELS) == ["anisotropic", "clustered", "spheres"]
    text = quality_report.markdown(suite)
    for results in suite.models:
        assert f"### Model: {results.model}" in text
        # the same methods, planned once, on every model; tuned rows are the model's own
        def shared(rows):
            return {r.method.name for r in rows if not (quality_ranking.tuned(r.method)
                                                        or quality_ranking.learned(r.method))}

        assert shared(results.rows) == shared(suite.models[0].rows)
        assert all(r.method.nfe == r.method.budget for r in results.rows if quality_ranking.tuned(r.method))
        fds = {r.method.name: quality_ranking.Row.stats(r.fd)[0] for r in results.table(5)}
        assert all(math.isfinite(v) for v in fds.values()), results.model
        for budget in suite.config.budgets:
            met, line = quality_ranking.target(results, budget)
            table = results.table(budget)
            assert met == table[0].method.pack
            assert f"| {results.model} | {budget} | {'yes' if met else '**no**'} |" in text
    # different models rank differently: the FD of one method is not the same number on each
    key = ("euler / karras", 5)
    euler = [quality_ranking.Row.stats(next(r.fd for r in m.rows if (r.method.name, r.method.budget) == key))[0]
             for m in suite.models]
    assert len({round(v, 6) for v in euler}) == 3


def test_quick_run_has_the_unipc_recipes_and_tuned_unipc(quick):
    """The UniPC recipes through Few-Step UniPC Sampler (afs as the recipe says), counted evaluations; the pack's
    KSampler name fewstep_unipc is not ranked as a core sampler."""
    methods = {(row.method.name, row.method.budget): row.method for row in quick.rows}
    assert not [name for name, _ in methods if name.startswith("fewstep_")]
    for name, budget, sigmas in (("FewStep SD1.5 5-step UniPC", 5, 6), ("FewStep SD1.5 6-step UniPC", 6, 7),
                                 ("FewStep SDXL 6-step UniPC", 6, 7), ("FewStep SD1.5 8-step UniPC", 8, 9),
                                 ("FewStep SDXL 8-step UniPC", 8, 9), ("FewStep SD1.5 5-step UniPC + denoised", 6, 6)):
        m = methods[(name, budget)]
        assert (m.nfe, len(m.sigmas), m.family.startswith("FewStep UniPC")) == (budget, sigmas, True), name
    # AFS on and off on the same 7 sigmas: 6 evaluations each (AFS: the first at the midpoint), different samples
    from fewstep.recipes import RECIPES

    harness = quality_methods.Harness(quality_methods.load_comfyui(), quality_models.MODELS["anisotropic"][1](0))
    sigmas = harness.pack_sigmas("SDXL 6-step UniPC")
    noise = torch.randn((4, *quality_models.LATENT_SHAPE), generator=torch.Generator().manual_seed(9))
    with_afs, n_afs = harness.sample(harness.pack_sampler("unipc_afs", "last_sigma"), sigmas, noise)
    without, n_plain = harness.sample(harness.pack_sampler("unipc", "last_sigma"), sigmas, noise)
    assert (n_afs, n_plain) == (6, 6) and RECIPES["SDXL 6-step UniPC"].solver == "unipc_afs"
    assert (with_afs - without).abs().max() > 1e-3
    tuned = {(r.method.budget, r.method.family) for r in quick.rows if quality_ranking.tuned(r.method)}
    assert tuned == {(b, f"FewStep tuned ({s})") for b in quick.config.budgets for s in ("dpmpp_2m", "unipc_afs")}


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
    mean = quality_ranking.Row.stats
    # 20 steps of DPM++2M are far closer to the exact ODE solution than 5 Euler steps
    assert mean(baseline.rms_zero)[0] < 0.5 * mean(euler5.rms_zero)[0]
    # exact samples set the floor no sampler can beat by much
    assert mean(quick.floor.fd)[0] < mean(euler5.fd)[0]
    assert quality_ranking.headline(quick)


def test_quick_run_reports_tuned_schedules(quick):
    """Each budget has a tuned row whose schedule came through Few-Step Sigmas' params input."""
    from fewstep.params import parse_params

    tuned = {(r.method.budget, r.method.family): r for r in quick.rows if quality_ranking.tuned(r.method)}
    assert len(quick.tunings) == 2 * len(quick.config.budgets)
    for tuning in quick.tunings:
        row = tuned[(tuning.budget, f"FewStep tuned ({tuning.solver})")]
        assert row.method.nfe == tuning.budget and row.method.pack
        params = parse_params(tuning.result.text)
        assert params.steps == tuning.budget and params.solver == tuning.solver
        assert tuning.result.objective <= tuning.result.start_objective
        assert tuning.result.candidates == quick.config.tune_candidates
        assert len(row.method.sigmas) == tuning.budget + 1 and float(row.method.sigmas[-1]) > 0
    assert "#### anisotropic, tuned schedules" in "\n".join(quality_report.markdown_model(quick))


def test_speedup_search_finds_the_first_integer_step_count_on_a_toy_curve():
    """distance(M) = 10 / M^2: the first M at or below the target, also inside the coarse part of the grid (13 lies
    between the grid's 12 and 14), interpolated in log distance; a target never reached gives None."""
    import quality_yardsticks

    calls = []

    def distance(m):
        calls.append(m)
        return 10.0 / m ** 2

    assert quality_yardsticks.speedup_steps(distance, 10.0 / 36) == (6, 6.0)
    first, interpolated = quality_yardsticks.speedup_steps(distance, 10.0 / 30)  # between 5 (0.4) and 6 (0.278)
    assert first == 6 and 5.0 < interpolated < 6.0
    assert interpolated == pytest.approx(5 + math.log(30 / 25) / math.log(36 / 25))
    calls.clear()
    assert quality_yardsticks.speedup_steps(distance, 10.0 / 169)[0] == 13
    assert 13 in calls and 15 not in calls and max(calls) == 14
    assert quality_yardsticks.speedup_steps(distance, 10.0 / 41 ** 2) == (None, None)
    # the FIRST step count that reaches the target, not the best one: a dip at 3 counts
    assert quality_yardsticks.first_reaching({2: 1.0, 3: 0.1, 4: 0.5, 5: 0.05}, 0.2)[0] == 3


def test_reference_shift_shrinks_with_the_step_size_and_says_when_it_is_below_a_difference():
    """Euler on dx/dt = -x from t = 0 to 1 as a toy 'reference': the error of n steps is O(1/n), so halving the step
    size moves the result by about 1/(2n) of it; the shift at 100 steps is far below the one at 10, and
    ``converged`` compares it with the smallest reported difference."""
    import quality_yardsticks

    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 2, 8, dtype=torch.float64)
    x0 = torch.randn((512, 8), generator=generator, dtype=torch.float64) * scale

    def euler(steps):
        return x0 * (1 - 1 / steps) ** steps

    rows = [x0 * math.exp(-1) + 0.05 * torch.randn(x0.shape, generator=generator, dtype=torch.float64)]
    coarse = quality_yardsticks.reference_shift(10, euler(10), euler(20), rows)
    fine = quality_yardsticks.reference_shift(100, euler(100), euler(200), rows)
    assert fine.rms < coarse.rms / 5 and fine.fd_shift < coarse.fd_shift / 5
    # the exact RMS between n and 2n Euler steps
    expected = float((euler(10) - euler(20)).pow(2).mean().sqrt())
    assert coarse.rms == pytest.approx(expected)
    threshold = 2 * max(fine.rms, fine.fd_shift)
    assert fine.converged(threshold) and not coarse.converged(threshold)
    # FD of a set to its own moments is 0; a shift by 0.5 in each of 8 dimensions costs 8 x 0.25
    moments = quality_yardsticks.Moments.of(rows[0])
    assert abs(moments.fd(rows[0])) < 1e-9
    assert moments.fd(rows[0] + 0.5) == pytest.approx(2.0, rel=1e-6)


def test_ceiling_search_beats_the_recipe_within_its_budget(comfy):
    """Powell in the tuner's space on the analytic model: it runs at least the evaluations asked, every combination
    of solver and end gets its first round, and its schedule is a params text Few-Step Sigmas reproduces."""
    import quality_ceiling

    from fewstep.params import parse_params
    from fewstep.tuner import compute_reference, denoiser_run

    harness = quality_methods.Harness(quality_methods.load_comfyui(), quality_models.MODELS["anisotropic"][1](0))
    noise = torch.randn((8, *quality_models.LATENT_SHAPE), generator=torch.Generator().manual_seed(1))
    table = harness.ms.sigmas.double()

    def work(denoiser, x_start):
        run = denoiser_run(denoiser, x_start, sigma_table=table)
        return quality_ceiling.ceiling_search(run, table, 5, compute_reference(run, table), evaluations=400)

    ceiling = harness.analytic_denoiser(noise, work)
    assert ceiling.evaluations >= 400 and len(ceiling.combinations) == 8
    assert ceiling.objective < 0.8 * ceiling.recipe_objective
    assert ceiling.objective == min(ceiling.combinations.values())
    assert ceiling.share(ceiling.objective) == pytest.approx(1.0) and ceiling.share(ceiling.recipe_objective) == 0
    params = parse_params(ceiling.text)
    assert params.steps == 5
    assert torch.equal(harness.pack_sigmas("custom", params=ceiling.text), params.sigmas(table).float())


def test_quick_run_learns_from_the_best_tuned_schedule_and_samples_what_it_learned(suite):
    """At the learn budget each model gets both fits from its best tuned schedule; a fit the held-out check keeps is
    a row, sampled through Few-Step Sigmas + Few-Step DPM++ Sampler with its params text, and that row's samples are
    the fitted solver's own (``fewstep`` straight, eps preconditioning for the model time) on the same noise."""
    from fewstep.params import parse_params
    from fewstep.plan import params_solver

    kept_somewhere = False
    for results in suite.models:
        assert [(f.budget, f.mode) for f in results.learnings] == [
            (5, mode) for mode in suite.config.learn_modes], results.model
        best = min((t for t in results.tunings if t.budget == 5), key=lambda t: t.result.objective)
        rows = {r.method.family: r for r in results.table(5) if quality_ranking.learned(r.method)}
        text = "\n".join(quality_report.markdown_model(results))
        assert f"#### {results.model}, learned solver weights and model times" in text
        for fit in results.learnings:
            r = fit.result
            assert fit.start == best.solver and r.tuning[1] <= r.tuning[0]
            assert r.learned == (r.held_out[1] < r.held_out[0]), results.model
            family = f"FewStep learned ({fit.mode.split('+', 1)[1]})"
            assert (family in rows) == r.learned, (results.model, family)
            if not r.learned:
                continue
            kept_somewhere = True
            method = rows[family].method
            assert method.nfe == 5 and method.pack and parse_params(r.text).weights is not None
            mixture = quality_models.MODELS[results.model][1](0)
            harness = quality_methods.Harness(quality_methods.load_comfyui(), mixture)
            noise = torch.randn((8, *quality_models.LATENT_SHAPE), generator=torch.Generator().manual_seed(3))
            sampled, evaluations = harness.sample(method.make_sampler(), method.sigmas, noise)
            params = parse_params(r.text)
            expected = harness.analytic_denoiser(noise, lambda denoiser, x: harness.tuning_run(
                denoiser, x, harness.tuning_table(), learned=True)(params.sigmas(harness.tuning_table()),
                                                                    params_solver(params)))
            assert evaluations == 5
            torch.testing.assert_close(sampled.double(), expected.double(), rtol=1e-4, atol=1e-4)
    assert kept_somewhere  # the analytic models' fits beat their tuned schedules on held-out noises


def test_learned_rows_are_read_against_the_tuned_row_their_fit_started_from(suite):
    """Issue 24's "no learned row worse than the tuned schedule it started from": every kept fit of the quick run gets
    one entry, its learned row and the tuned row of the solver it started from at that budget, with the seed-by-seed
    FD and RMS differences (recomputed here from the rows' per-seed values), and the report prints them."""
    from quality_learned_checks import against_start

    counted = 0
    for results in suite.models:
        entries = against_start(results)
        kept = [f for f in results.learnings if f.result.learned]
        assert len(entries) == len(kept), results.model
        for entry, fit in zip(entries, kept):
            assert entry.budget == fit.budget
            assert entry.learned.method.family == f"FewStep learned ({fit.mode.split('+', 1)[1]})"
            assert entry.start.method.family == f"FewStep tuned ({fit.start})"
            fd = numpy.array(entry.learned.fd) - numpy.array(entry.start.fd)
            rms = numpy.array(entry.learned.rms_zero) - numpy.array(entry.start.rms_zero)
            assert entry.fd[0] == pytest.approx(fd.mean()) and entry.rms[0] == pytest.approx(rms.mean())
            assert entry.worse == (entry.fd[0] - entry.fd[1] > 0)
            counted += 1
    assert counted > 0
    text = quality_report.markdown(suite)
    assert "### Learned rows against their start" in text
    assert "- analytic models: " in text and f"of {counted} learned rows no worse than their start" in text


def test_the_learned_solvers_targets_are_read_off_the_fd_speedups_of_the_trained_models():
    """Issue 24's targets (2.5x at 5 and 6, 2x at 8 on every trained proxy; 4x at 5 on one) from the speed-up
    table: the interpolated M / N by FD, 40 / N where no M up to 40 reaches the row; RMS speed-ups and the analytic
    models do not count."""
    from quality_learned_checks import speedup_targets
    from quality_ranking import SpeedUp

    def up(budget, metric, m):
        return SpeedUp(budget, metric, 0.1, f"row {budget}", 0.01, (None if m is None else round(m + 0.5), m), (5, 5.0))

    trained = SimpleNamespace(model="proxy", trained=True, speedups=[
        up(5, "FD", 21.0), up(5, "RMS at 0", 30.0), up(6, "FD", 14.9), up(8, "FD", None), up(10, "FD", 11.0)])
    other = SimpleNamespace(model="proxy2", trained=True, speedups=[up(5, "FD", 12.0)])
    analytic = SimpleNamespace(model="mixture", trained=False, speedups=[up(5, "FD", 40.0)])
    suite = SimpleNamespace(models=[analytic, trained, other], config=SimpleNamespace(sweep_label="DPM++2M Karras"))
    rows = speedup_targets(suite)
    assert [(m, n, goal, pytest.approx(f), met) for m, n, goal, _, f, met in rows] == [
        ("proxy", 5, 2.5, 4.2, True), ("proxy", 6, 2.5, 14.9 / 6, False), ("proxy", 8, 2.0, 5.0, True),
        ("proxy2", 5, 2.5, 2.4, False)]
    text = "\n".join(quality_report.target_lines(suite))
    assert "- met in 2 of 4 cells" in text and "4x at 5 evaluations on one proxy: met (best 4.20x, proxy)" in text
    assert "| proxy | 6 | 2.5x | row 6 | 2.48x | **no** |" in text


def test_tuner_gap_rebuilds_the_benchmarks_probes_and_reads_the_kept_ceiling(comfy):
    """benchmarks/tuner_gap.py (the diagnostic for the tuner's share of the ceiling) at a tiny cap on photo_eps, N = 5:
    its line from the tuned schedule to the ceiling's ends on exactly the kept ceiling's objective (so it rebuilds the
    quality benchmark's probes, reference and search coordinates), and its short search is a real tuning run."""
    import tuner_gap

    args = SimpleNamespace(cap=8, per_choice=True, line=True)
    found = tuner_gap.gap(quality_methods.load_comfyui(), "photo_eps", 5, args)
    at_ceiling = found["line"][tuner_gap.LINE_POINTS.index(1.0)]
    assert at_ceiling == pytest.approx(found["ceiling"]["objective"], rel=1e-3)
    assert found["line"][tuner_gap.LINE_POINTS.index(0.0)] > at_ceiling  # the tuned start of the line is worse
    tuned = found["tuned"]
    assert tuned.candidates == 8 and tuned.objective < found["ceiling"]["recipe_objective"]
    first, value, candidates = found["per_choice"]
    assert candidates == 8 and value < first


def test_learned_fit_references_are_what_the_fit_runs_converge_to_on_the_conditional_proxy(comfy):
    """bench-quality's learned fit on a trained model: its probes are the tuning probes and more, its references are
    the node's (LEARN_REFERENCE_STEPS evaluations, finer than the search's 40), solved on the batch the fit samples.
    On the class-conditional digits proxy (ComfyUI gives a smaller batch the first rows of the conditioning) the
    fit's own run of that many steps lands on its reference for every probe, the tuning probes get theirs, the
    40-step solution is another one, and solving the extra probes alone would have given them other classes."""
    from quality_trained import TrainedTarget, trained_models
    from quality_tuning import fit_references

    from fewstep.tuner_learn import LEARN_REFERENCE_STEPS
    from fewstep.tuner_objective import compute_reference, distance, reference_sigmas

    loaded = quality_methods.load_comfyui()
    target = TrainedTarget(loaded, trained_models()["digits_cond_cfg5"])
    harness = quality_methods.Harness(loaded, quality_models.MODELS["anisotropic"][1](0), target.ms)
    table = harness.tuning_table()
    noise = torch.randn((16, *target.latent_shape), generator=torch.Generator().manual_seed(5))

    def work(denoiser, x_start):
        steps = LEARN_REFERENCE_STEPS
        tuning = compute_reference(harness.tuning_run(denoiser, x_start[:4], table), table, steps)
        fit_run, fit_reference, held_out_run, held_out_reference = fit_references(
            harness, denoiser, x_start[:8], x_start[8:], table)
        alone = compute_reference(harness.tuning_run(denoiser, x_start[4:8], table), table, steps)
        sigmas = reference_sigmas(table, steps)
        return (tuning, fit_reference, alone, distance(fit_run(sigmas, "dpmpp_2m"), fit_reference),
                distance(held_out_run(sigmas, "dpmpp_2m"), held_out_reference),
                distance(fit_run(reference_sigmas(table, 40), "dpmpp_2m"), fit_reference))

    tuning, fit_reference, alone, fit_gap, held_out_gap, coarse_gap = target.with_denoiser(noise, work)
    assert LEARN_REFERENCE_STEPS > 40 and fit_reference.shape[0] == 8 and fit_gap < 1e-5 and held_out_gap < 1e-5
    torch.testing.assert_close(fit_reference[:4], tuning, rtol=0, atol=1e-4)
    assert coarse_gap > 1e-4  # the search's 40 steps land elsewhere
    assert distance(alone, fit_reference[4:]) > 0.1  # the extra probes alone: other classes, other samples


def test_trained_target_runs_the_network_on_its_own_threads_and_gives_the_callers_back(comfy):
    """bench-quality samples the trained proxies on Config.trained_threads torch threads (the convolutions gain from
    a second core, the float64 eigen-solves of the scores do not): every network call of a run sees that many, and
    the caller's thread count is back afterwards."""
    from quality_trained import TrainedTarget, trained_models

    loaded = quality_methods.load_comfyui()
    target = TrainedTarget(loaded, trained_models()["photo_eps"], threads=2)
    seen = []
    hook = target.patcher.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        noise = torch.randn((2, *target.latent_shape), generator=torch.Generator().manual_seed(0))
        out, nfe = target.sample(loaded.samplers.sampler_object("euler"), target.reference_sigmas(3), noise)
        after = torch.get_num_threads()
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert nfe == 3 and seen == [2, 2, 2] and after == 1 and torch.isfinite(out).all()


def test_speedup_rows_solve_no_new_reference_but_ranked_rows_do(comfy):
    """The speed-up search reads FD and RMS at 0 only: a row it scores (stops=False) whose stopping sigma has no
    reference yet gets NaN there and no new RK4 solve (42 of them took 7 of the clustered model's 9 minutes on
    ComfyUI 0.3.64), with the same FD and RMS at 0 as a ranked row (stops=True), which solves it."""
    from quality_scores import AnalyticScorer

    loaded = quality_methods.load_comfyui()
    config = quality_methods.Config(seeds=1, samples=64, reference_steps=20)
    harness = quality_methods.Harness(loaded, MODELS["clustered"]())
    scorer = AnalyticScorer(harness, config)
    ranked = harness.core_method("dpmpp_2m", "karras", 5)
    scorer.prepare([ranked])
    late = harness.core_method("dpm_fast", "karras", 7)  # stops at its last non-zero sigma
    start = harness.start(late, scorer.noises[0][:1])[1]
    assert late.sigma_end > 0 and late.sigma_end not in scorer.references[0][start]
    solved = dict(scorer.references[0])
    quick_row = scorer.score(late, stops=False)
    assert scorer.references[0].keys() == solved.keys() and all(
        scorer.references[0][k] is solved[k] for k in solved)
    assert math.isnan(quick_row.rms_end[0]) and math.isfinite(quick_row.rms_zero[0])
    full_row = scorer.score(late)
    assert math.isfinite(full_row.rms_end[0]) and full_row.rms_end[0] > 0
    # the solve with the new stopping sigma on its grid moves the RMS at 0 by a few parts in a million
    assert full_row.fd == quick_row.fd and full_row.rms_zero[0] == pytest.approx(quick_row.rms_zero[0], rel=1e-4)


def test_the_trend_budgets_search_fewer_schedules_than_the_ranked_ones():
    """At a ranked budget a tuning run has the node's cap (tune_candidates); at a trend budget the smaller of it and
    trend_candidates; None (no cap) on either side leaves the other."""
    from quality_methods import Config
    from quality_tuning import candidates

    config = Config()
    assert [candidates(config, budget) for budget in config.budgets] == [300, 300, 300, 100, 100]
    assert candidates(replace(config, tune_candidates=40), 12) == 40
    assert candidates(replace(config, trend_candidates=None), 10) == 300
    assert candidates(replace(config, tune_candidates=None), 10) == 100
    assert candidates(replace(config, tune_candidates=None), 5) is None


def test_the_trained_models_tune_auto_and_fit_the_model_time_only():
    """On a trained model bench-quality tunes with the node's default solver (auto) and runs one learned fit per
    budget, the model-time one (it fits the weights too); the analytic models keep both modes."""
    from quality_methods import Config
    from quality_ranking import trained_tuning

    config = Config()
    trained = trained_tuning(config)
    assert trained.tune_solvers == ("auto",) and trained.learn_modes == ("schedule+weights+model time",)
    assert config.learn_modes == ("schedule+weights", "schedule+weights+model time")
    assert (trained.budgets, trained.learn_budgets) == (config.budgets, config.learn_budgets)
    # the trained models' fits stop after a number of runs (the same fit on any machine), the analytic ones on time
    assert (trained.learn_runs, trained.learn_seconds) == (config.trained_learn_runs, config.trained_learn_seconds)
    assert config.learn_runs is None and config.trained_learn_runs > 0
    # a larger fit at chosen budgets (--learn-larger) reaches the trained models only
    larger = replace(config, trained_learn_larger=((8, 128, 400),))
    assert trained_tuning(larger).learn_larger == ((8, 128, 400),) and larger.learn_larger == ()


def test_a_larger_fit_at_a_budget_has_its_own_probes_held_out_noises_and_runs(comfy):
    """Config.learn_larger (the trained models' NFE 8 fit): at that budget the learned fit runs on more probes (the
    tuning probes first), is judged on as many held-out noises (seed HELD_OUT_SEED + budget) and stops after its
    own number of runs; the other budget keeps learn_probes and learn_runs. The held-out distance of the schedule
    alone is recomputed here on the noises each budget should have; each run on the probes is one batch of NFE
    evaluations."""
    from quality_methods import HELD_OUT_SEED
    from quality_tuning import tuned_methods

    from fewstep.params import parse_params
    from fewstep.plan import params_solver
    from fewstep.tuner_learn import LEARN_REFERENCE_STEPS
    from fewstep.tuner_objective import compute_reference, distance

    config = replace(quality_methods.QUICK, budgets=(5, 6), ranked_budgets=(5, 6), tune_solvers=("dpmpp_2m",),
                     tune_candidates=6, learn_budgets=(5, 6), learn_modes=("schedule+weights",), learn_runs=5,
                     learn_seconds=600.0, learn_larger=((6, 24, 9),))
    harness = quality_methods.Harness(quality_methods.load_comfyui(), MODELS["anisotropic"]())
    _, tunings, learnings, _ = tuned_methods(harness, config, "anisotropic", probes=16, learn_probes=16)
    assert [(f.budget, f.probes) for f in learnings] == [(5, 16), (6, 24)]
    runs = [f.result.runs for f in learnings]
    assert 5 <= runs[0] < 9 <= runs[1] < 13, runs  # each stops on its own cap (a Jacobian's group may finish)
    assert [f.result.evaluations for f in learnings] == [5 * runs[0], 6 * runs[1]]
    table = harness.tuning_table()
    for fit, tuning in zip(learnings, tunings):
        params = parse_params(tuning.result.text)
        noise = torch.randn((fit.probes, *quality_models.LATENT_SHAPE),
                            generator=torch.Generator().manual_seed(HELD_OUT_SEED + fit.budget))

        def alone(denoiser, x, params=params):
            run = harness.tuning_run(denoiser, x, table, learned=True)
            return distance(run(params.sigmas(table), params_solver(params)),
                            compute_reference(run, table, LEARN_REFERENCE_STEPS))

        assert harness.analytic_denoiser(noise, alone) == pytest.approx(fit.result.held_out[0], rel=1e-9)
