"""The schedule tuner: its search on the analytic model, the params string, and the node in a real ComfyUI."""

from __future__ import annotations

import math
import time

import pytest
import torch
from conftest import count_evaluations, latent
from test_bench_quality import quality_models as quality

from fewstep import search_gauss_newton
from fewstep.params import ParamsError, ScheduleParams, format_params, parse_params
from fewstep.plan import make_plan
from fewstep.recipes import RECIPES, recipe_for_step_count
from fewstep.schedule import recipe_sigmas, standard_sigma_table
from fewstep.tuner import tune
from fewstep.tuner_objective import (
    compute_reference,
    denoiser_run,
    distance,
    ramp_from_logits,
    reference_sigmas,
    valid_schedule,
)

TABLE = standard_sigma_table()
SIGMA_MAX = float(TABLE[-1])
EARLY_STOP = "index"  # tests of the search's own moves (as measured before the end choice): the paper's end only


# --- the search on the analytic model (exact denoiser of a Gaussian mixture) ------------------------

@pytest.fixture(scope="module")
def mixture():
    return quality.GaussianMixture.random(components=4, shape=(4, 4, 4), seed=2)


def start_latents(count: int, seed: int) -> torch.Tensor:
    noise = torch.randn((count, 4, 4, 4), generator=torch.Generator().manual_seed(seed))
    return noise * math.sqrt(1.0 + SIGMA_MAX ** 2)  # ComfyUI's EPS noise scaling at sigma_max


def exact_denoiser(mixture):
    def denoiser(x, sigma):
        flat = x.reshape(x.shape[0], -1).double()
        return mixture.denoise(flat, sigma.double().reshape(-1).expand(x.shape[0])).reshape(x.shape).float()
    return denoiser


@pytest.fixture(scope="module")
def tuned(mixture):
    run = denoiser_run(exact_denoiser(mixture), start_latents(256, seed=11))
    return tune(run, TABLE, 5, "dpmpp_2m", time_budget=120, max_candidates=120)


def test_search_improves_the_objective_and_returns_a_valid_schedule(mixture, tuned):
    assert tuned.objective < 0.8 * tuned.start_objective
    assert valid_schedule(tuned.sigmas, 5) and len(tuned.sigmas) == 6 and float(tuned.sigmas[-1]) > 0
    assert float(tuned.sigmas[0]) == pytest.approx(SIGMA_MAX, rel=1e-6)
    assert tuned.params.ramp is not None and tuned.params.solver == "dpmpp_2m"
    # the text reproduces the schedule exactly, and the objective is what that schedule scores
    assert torch.equal(parse_params(tuned.text).sigmas(TABLE), tuned.sigmas)
    run = denoiser_run(exact_denoiser(mixture), start_latents(256, seed=11))
    reference = run(reference_sigmas(TABLE), "dpmpp_2m")
    assert distance(run(tuned.sigmas, "dpmpp_2m"), reference) == pytest.approx(tuned.objective, rel=1e-9)
    start = recipe_sigmas(recipe_for_step_count(5), TABLE)
    assert distance(run(start, "dpmpp_2m"), reference) == pytest.approx(tuned.start_objective, rel=1e-9)
    assert tuned.model_evaluations == 40 + 5 * tuned.candidates
    # (the pattern search always ran to the limit of 120 here; the Gauss-Newton search converges within it)
    assert tuned.stopped_by in ("candidate limit", "converged") and 1 < tuned.candidates <= 120


def test_tuned_schedule_is_better_on_noise_it_was_not_tuned_on(mixture, tuned):
    """Against the exact ODE solution (RK4), on held-out noise."""
    x = start_latents(256, seed=12)
    exact = quality.reference_solution(mixture, x, SIGMA_MAX, set(), 100)[0.0].reshape(x.shape)
    run = denoiser_run(exact_denoiser(mixture), x)
    start = recipe_sigmas(recipe_for_step_count(5), TABLE)
    assert distance(run(tuned.sigmas, "dpmpp_2m"), exact) < 0.85 * distance(run(start, "dpmpp_2m"), exact)


def test_search_is_deterministic_and_keeps_to_its_time_budget(mixture):
    x = start_latents(16, seed=3)
    first = tune(denoiser_run(exact_denoiser(mixture), x), TABLE, 6, "dpmpp_1s", max_candidates=25)
    second = tune(denoiser_run(exact_denoiser(mixture), x), TABLE, 6, "dpmpp_1s", max_candidates=25)
    assert first.text == second.text and first.objective == second.objective

    ticks = [0.0]  # a clock that advances one second per solver run: the budget is counted in runs
    calls = []

    def run(sigmas, solver):
        ticks[0] += 1.0
        calls.append(len(sigmas))
        return denoiser_run(exact_denoiser(mixture), x)(sigmas, solver)

    reports = []
    result = tune(run, TABLE, 6, "dpmpp_1s", time_budget=10.0, clock=lambda: ticks[0],
                  progress=lambda candidates, best: reports.append((candidates, best)))
    assert result.stopped_by == "time budget" and ticks[0] <= 10.0 and len(calls) == 10
    # progress: (candidates so far, best objective so far) after each candidate, then once more at the end
    assert [c for c, _ in reports] == [*range(1, result.candidates + 1), result.candidates]
    assert all(b2 <= b1 for (_, b1), (_, b2) in zip(reports, reports[1:]))  # the best only improves
    assert reports[0][1] == result.start_objective and reports[-1][1] == result.objective


def test_interrupt_check_stops_the_search(mixture):
    class Stop(Exception):
        pass

    checks = []

    def check():
        checks.append(1)
        if len(checks) > 4:
            raise Stop

    with pytest.raises(Stop):
        tune(denoiser_run(exact_denoiser(mixture), start_latents(4, 0)), TABLE, 5, "dpmpp_2m", check_interrupt=check)
    assert len(checks) == 5


@pytest.mark.parametrize("solver", ["unipc", "unipc_afs"])
def test_search_tunes_for_unipc_with_and_without_afs(mixture, solver):
    """The tuner runs the F-scheduler's UniPC (the objective is UniPC's, not DPM++'s) and records it in params."""
    run = denoiser_run(exact_denoiser(mixture), start_latents(64, seed=11))
    result = tune(run, TABLE, 6, solver, time_budget=120, max_candidates=40)
    assert result.objective < 0.97 * result.start_objective  # 40 candidates: a first part of the gain
    assert result.params.solver == solver and f" solver={solver}" in result.text
    assert torch.equal(parse_params(result.text).sigmas(TABLE), result.sigmas)
    reference = run(reference_sigmas(TABLE), "dpmpp_2m")
    assert distance(run(result.sigmas, solver), reference) == pytest.approx(result.objective, rel=1e-9)
    # the objective is the chosen solver's: the same schedule scores differently under the other solvers
    for other in ("dpmpp_1s", "unipc", "unipc_afs"):
        if other != solver:
            assert distance(run(result.sigmas, other), reference) != pytest.approx(result.objective, rel=1e-3)
    assert result.model_evaluations == 40 + 6 * result.candidates  # AFS keeps N evaluations per candidate


# (model, NFE) per solver: the pattern search converges there within a few hundred candidates
FAST_CASES = {"dpmpp_1s": 5, "dpmpp_2m": 6, "unipc": 5, "unipc_afs": 6}


@pytest.mark.parametrize("solver", sorted(FAST_CASES))
def test_gauss_newton_reaches_90_percent_of_the_pattern_search_within_30_candidates(mixture, solver):
    """The default search, capped at 30 candidates, removes most of what the old compass search (method =
    "pattern", the same code as before) removes at convergence: same start, probes, reference, objective.
    The issue's 90 % is measured by benchmarks/tuner_search.py on the quality benchmark's models, where it is
    met in most rows, not all (docs/tuner_search.md); here, on a small mixture, two of these four cases give
    0.88 since the line search on time_rho (0.95-1.12 for the other two), so the bound is 0.85."""
    steps = FAST_CASES[solver]
    run = denoiser_run(exact_denoiser(mixture), start_latents(32, seed=11))
    reference = compute_reference(run, TABLE)
    old = tune(run, TABLE, steps, solver, time_budget=math.inf, method="pattern", reference=reference, end=EARLY_STOP)
    assert old.stopped_by == "converged" and old.candidates > 100
    new = tune(run, TABLE, steps, solver, time_budget=math.inf, max_candidates=30, reference=reference,
               end=EARLY_STOP)
    assert new.start_objective == old.start_objective and new.candidates == 30
    share = (new.start_objective - new.objective) / (old.start_objective - old.objective)
    print(f"{solver} NFE {steps}: pattern {old.start_objective:.4f} -> {old.objective:.4f} in {old.candidates}, "
          f"Gauss-Newton {new.objective:.4f} in 30 ({share:.2f} of the improvement)")
    assert share >= 0.85
    # the objective is what the schedule scores, and its text reproduces it
    assert distance(run(new.sigmas, solver), reference) == pytest.approx(new.objective, rel=1e-9)
    assert torch.equal(parse_params(new.text).sigmas(TABLE), new.sigmas) and valid_schedule(new.sigmas, steps)
    # a passed-in reference costs no evaluations: N per candidate only
    assert new.model_evaluations == steps * new.candidates


def quality_model_run(name: str, probes: int = 16):
    """(run, reference) on the quality benchmark's analytic model ``name`` (seed 0), probes of shape (4, 8, 8)."""
    model = quality.MODELS[name][1](0)

    def denoiser(x, sigma):
        flat = x.reshape(x.shape[0], -1).double()
        return model.denoise(flat, sigma.double().reshape(-1).expand(x.shape[0])).reshape(x.shape).float()

    x = torch.randn((probes, 4, 8, 8), generator=torch.Generator().manual_seed(7000)) * math.sqrt(1.0 + SIGMA_MAX ** 2)
    run = denoiser_run(denoiser, x, TABLE)
    return run, compute_reference(run, TABLE)


def quality_model_and_compass(name: str, steps: int, solver: str, probes: int = 16):
    """(run, reference, converged compass search) on the quality benchmark's analytic model ``name`` (seed 0),
    ``probes`` probes of shape (4, 8, 8) (64: as benchmarks/tuner_search.py)."""
    run, reference = quality_model_run(name, probes)
    old = tune(run, TABLE, steps, solver, time_budget=math.inf, method="pattern", reference=reference, end=EARLY_STOP)
    assert old.stopped_by == "converged"
    return run, reference, old


def test_line_search_on_time_rho_reaches_what_the_local_model_cannot_see():
    """The spheres model of the quality benchmark (DPM++1S, NFE 6): its best schedule has a time_rho of about
    0.4 against the recipe's 1.0+, where the finite differences at the start are nearly flat. The line search
    between the two Gauss-Newton stages gets the search to 90 % of the compass search's converged improvement
    within 30 candidates; without it (LINE_STEP = 0: no line search at all) it stays near 0.55. One case of a
    landscape with many basins; benchmarks/tuner_search.py measures the search on 36 per model seed
    (docs/tuner_search.md)."""
    run, reference, old = quality_model_and_compass("spheres", 6, "dpmpp_1s")
    shares = {}
    for line_step in (search_gauss_newton.LINE_STEP, 0.0):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search_gauss_newton, "LINE_STEP", line_step)
            new = tune(run, TABLE, 6, "dpmpp_1s", time_budget=math.inf, max_candidates=30, reference=reference,
                       end=EARLY_STOP)
        shares[line_step] = (new.start_objective - new.objective) / (old.start_objective - old.objective)
        if line_step:
            assert new.params.time_rho < 0.75 * recipe_for_step_count(6).time_rho
    print(f"spheres DPM++1S NFE 6, share of the compass search's improvement at 30 candidates: {shares}")
    assert shares[search_gauss_newton.LINE_STEP] >= 0.9 and shares[0.0] < 0.8


def test_line_searches_at_a_stall_finish_what_the_gauss_newton_steps_crawl_towards():
    """The anisotropic model of the quality benchmark (DPM++1S, NFE 5): its whole improvement is a few percent of
    the start, and the Gauss-Newton steps crawl along a curved valley. When five candidates in a row lower the
    objective by less than 1 % together, line searches on the end and on each logit follow. With them the search
    reaches 90 % of the compass search's converged improvement within 30 candidates (0.935 measured); with
    STALL_CANDIDATES out of reach it stays near 0.81."""
    run, reference, old = quality_model_and_compass("anisotropic", 5, "dpmpp_1s")
    shares = {}
    for stall in (search_gauss_newton.STALL_CANDIDATES, 10 ** 9):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search_gauss_newton, "STALL_CANDIDATES", stall)
            new = tune(run, TABLE, 5, "dpmpp_1s", time_budget=math.inf, max_candidates=30, reference=reference,
                       end=EARLY_STOP)
        shares[stall] = (new.start_objective - new.objective) / (old.start_objective - old.objective)
    print(f"anisotropic DPM++1S NFE 5, share of the compass search's improvement at 30 candidates: {shares}")
    assert shares[search_gauss_newton.STALL_CANDIDATES] >= 0.9 and shares[10 ** 9] < 0.85


@pytest.mark.parametrize("steps", (5, 6, 8))
def test_karras_jump_puts_the_steps_on_the_karras_spacing(steps):
    """The jump's schedule keeps the end and time_rho and has its interior sigmas where Karras (rho 7) between
    the schedule's first and last sigma has them, computed here from the formula (sigma^(1/7) evenly spaced).
    Up to the two interpolations of the table (log-sigma to find timesteps, alphas_cumprod back to sigmas)."""
    for end_index in (4, 7):  # an early stop, and the end at sigma_min (base_steps 8)
        params = ScheduleParams(steps, 8, 10.0, end_index, 1.2)
        logits = search_gauss_newton._karras_logits(params, TABLE)
        assert logits is not None and len(logits) == steps - 1
        jumped = ScheduleParams(steps, 8, 10.0, end_index, 1.2, ramp=ramp_from_logits(logits)).sigmas(TABLE).double()
        plain = params.sigmas(TABLE).double()
        high, low = float(plain[0]) ** (1 / 7), float(plain[-1]) ** (1 / 7)
        karras = torch.tensor([(high + i / steps * (low - high)) ** 7 for i in range(steps + 1)], dtype=torch.float64)
        assert float(jumped[0]) == pytest.approx(float(plain[0]), rel=1e-6)
        assert float(jumped[-1]) == pytest.approx(float(plain[-1]), rel=1e-6)
        assert torch.allclose(jumped, karras, rtol=0.02), (jumped, karras)
        assert not torch.allclose(plain, karras, rtol=0.05)  # the recipe's own spacing is another one


@pytest.mark.parametrize("name, steps, solver", [("clustered", 5, "dpmpp_2m"), ("anisotropic", 6, "dpmpp_1s")])
def test_karras_jump_at_the_first_stall_leaves_a_level_no_local_move_leaves(name, steps, solver):
    """The two cases of the quality benchmark (seed 0, its 64 probes) where the search without the jump misses 90 %
    of the compass search's converged improvement at 30 candidates: DPM++2M NFE 5 on the clustered mixture (it
    stalls at 0.76 on a level around sigma_1 ~ 4.3; the Karras spacing lies on the compass search's lower one) and
    DPM++1S NFE 6 on the anisotropic one (0.83). With the jump: 0.97 and 5.1 measured (docs/tuner_search.md)."""
    run, reference, old = quality_model_and_compass(name, steps, solver, probes=64)
    shares = {}
    for label, logits in (("jump", search_gauss_newton._karras_logits), ("none", lambda *args, **kwargs: None)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search_gauss_newton, "_karras_logits", logits)
            new = tune(run, TABLE, steps, solver, time_budget=math.inf, max_candidates=30, reference=reference,
                       end=EARLY_STOP)
        shares[label] = (new.start_objective - new.objective) / (old.start_objective - old.objective)
    print(f"{name} {solver} NFE {steps}, share at 30 candidates: {shares}")
    assert shares["jump"] >= 0.9 and shares["none"] < 0.85


def test_search_methods_are_named():
    with pytest.raises(ValueError, match="method = 'newton' is not one of \\['gauss_newton', 'pattern'\\]"):
        tune(lambda s, w: None, TABLE, 5, "dpmpp_2m", method="newton")


def test_tuner_rejects_bad_arguments():
    with pytest.raises(ValueError, match="solver = 'euler'"):
        tune(lambda s, w: None, TABLE, 5, "euler")
    with pytest.raises(ValueError, match="steps = 0"):
        tune(lambda s, w: None, TABLE, 0, "dpmpp_1s")


# --- the end and the solver the tuner chooses -------------------------------------------------------

def ksampler_distance(run, reference, text: str) -> float:
    """The distance of what Few-Step KSampler samples with recipe `custom` and this params text (its plan: sigmas
    and solver) on the probes."""
    plan = make_plan("custom", params=text)
    return distance(run(plan.sigmas, plan.solver), reference)


@pytest.mark.parametrize("name, chosen", [("spheres", "0"), ("anisotropic", "index")])
def test_tuner_chooses_the_end_and_reports_both(name, chosen):
    """The spheres model: ending at 0 is far better (its early stop leaves noise the data does not have); the
    anisotropic mixture: the paper's early stop is better. The tuner screens both on the start, searches the
    better, reports the best distance of each, and writes end=0 only when it chose it."""
    run, reference = quality_model_run(name)
    result = tune(run, TABLE, 6, "dpmpp_2m", time_budget=math.inf, max_candidates=30, reference=reference)
    assert set(result.ends) == {"index", "0"} and all(math.isfinite(v) for v in result.ends.values())
    assert result.params.end == chosen and min(result.ends, key=result.ends.get) == chosen
    assert result.objective == result.ends[chosen] < result.ends["index" if chosen == "0" else "0"]
    assert ("end=0" in result.text) == (chosen == "0") and (float(result.sigmas[-1]) == 0.0) == (chosen == "0")
    assert valid_schedule(result.sigmas, 6, chosen == "0") and result.candidates == 30
    assert result.model_evaluations == 6 * result.candidates  # ending at 0 costs no evaluation more
    # the start is the recipe with the early stop; Few-Step KSampler with the text samples exactly the tuned result
    start = recipe_sigmas(recipe_for_step_count(6), TABLE)
    assert distance(run(start, "dpmpp_2m"), reference) == pytest.approx(result.start_objective, rel=1e-9)
    assert ksampler_distance(run, reference, result.text) == pytest.approx(result.objective, rel=1e-6)
    only_index = tune(run, TABLE, 6, "dpmpp_2m", time_budget=math.inf, max_candidates=30, reference=reference,
                      end="index")
    assert only_index.ends["0"] == math.inf and "end=" not in only_index.text


@pytest.mark.parametrize("end", ["0", "index"])
def test_auto_solver_keeps_the_end_it_is_given(end):
    """solver=auto with the end named: the result ends there, through the screen, the runners-up and the race,
    also where the other end is better (the anisotropic mixture: the early stop; the start, measured with the
    early stop whatever the end, is not a result with end=0). A budget spent at the first candidate still
    returns a schedule with the end named."""
    run, reference = quality_model_run("anisotropic")
    free = tune(run, TABLE, 5, "auto", time_budget=math.inf, max_candidates=300, reference=reference)
    assert free.params.end == "index"  # on this model the early stop wins when the tuner may choose
    result = tune(run, TABLE, 5, "auto", time_budget=math.inf, max_candidates=300, reference=reference, end=end)
    assert result.params.end == end and ("end=0" in result.text) == (end == "0")
    assert (float(result.sigmas[-1]) == 0.0) == (end == "0") and result.candidates == 300
    assert ksampler_distance(run, reference, result.text) == pytest.approx(result.objective, rel=1e-6)
    spent = tune(run, TABLE, 5, "auto", time_budget=math.inf, max_candidates=1, reference=reference, end=end)
    assert spent.params.end == end and math.isfinite(spent.objective)


@pytest.mark.parametrize("steps, screened", [(5, 10), (8, 6)])
def test_auto_solver_screens_every_solver_within_the_same_candidates(steps, screened):
    """solver=auto: DPM++1S / 2M and UniPC (bh1 / bh2, with and without AFS, order auto / 2; at 8 evaluations
    order auto is 2, so one of them) each on the start, then the search on the best, all within the candidates
    one solver gets. The params text names the solver and its options, and Few-Step KSampler with it samples
    exactly the tuned result."""
    run, reference = quality_model_run("anisotropic")
    result = tune(run, TABLE, steps, "auto", time_budget=math.inf, max_candidates=30, reference=reference)
    assert result.candidates == 30 and result.model_evaluations == steps * 30
    assert len(result.solvers) == screened and min(result.solvers.values()) == result.objective
    assert set(result.solvers) >= {"dpmpp_1s", "dpmpp_2m", "unipc bh1 order auto", "unipc_afs bh2 order auto"}
    assert ("unipc bh2 order 2" in result.solvers) == (steps < 7)
    params = parse_params(result.text)
    assert params.solver == result.params.solver and result.text.count("solver=") == 1
    if params.solver.startswith("unipc"):
        assert params.variant in ("bh1", "bh2") and params.order in ("auto", "2")
    assert ksampler_distance(run, reference, result.text) == pytest.approx(result.objective, rel=1e-6)
    # the start is the recipe as the fewstep scheduler runs it (its solver, the early stop): the gain from there
    start = recipe_sigmas(recipe_for_step_count(steps), TABLE)
    recipe_solver = recipe_for_step_count(steps).solver
    assert distance(run(start, recipe_solver), reference) == pytest.approx(result.start_objective, rel=1e-9)
    one = tune(run, TABLE, steps, recipe_solver, time_budget=math.inf, max_candidates=30, reference=reference)
    assert result.objective < one.objective  # on this model another solver wins


def test_auto_searches_the_two_best_runners_up_from_the_starting_schedule():
    """solver=auto, end=auto: after the first search (FIRST_SEARCH candidates on the screen's best choice), every
    choice runs on the starting schedule at the other end too, and the two best of the other choices there are
    searched in turn, each from the starting schedule: a solver searched from where another one was tuned can stay
    in a worse basin (benchmarks/tuner_gap.py)."""
    from fewstep import tuner

    run, reference = quality_model_run("anisotropic")
    steps = 5
    start = recipe_sigmas(recipe_for_step_count(steps), TABLE)
    calls = []  # (choice, on the starting schedule, distance), one per solver run

    def recording(sigmas, solver):
        out = run(sigmas, solver)
        end_zero = float(sigmas[-1]) == 0.0
        on_start = torch.equal(sigmas[:-1].double(), start[:-1].double()) and (
            end_zero or torch.equal(sigmas.double(), start.double()))
        calls.append(((solver.name, solver.afs, solver.variant, solver.order, end_zero), on_start,
                      distance(out, reference)))
        return out

    tune(recording, TABLE, steps, "auto", time_budget=math.inf, max_candidates=300, reference=reference)
    first = calls[tuner.FIRST_SEARCH - 1][0]  # the first search's choice (its last candidate)
    assert all(on_start for _, on_start, _ in calls[:11]) and len({c for c, _, _ in calls[:11]}) == 11  # the screen
    screened_end = calls[1][0][-1] if calls[1][2] < calls[0][2] else calls[0][0][-1]
    later = calls[tuner.FIRST_SEARCH:]
    others = later[:9]  # the other end of every solver option but the recipe's, on the starting schedule
    assert all(on_start and choice[-1] != screened_end for choice, on_start, _ in others)
    at_start = {choice: value for choice, on_start, value in calls if on_start}
    assert len(at_start) == 20
    ranked = sorted((value, choice) for choice, value in at_start.items() if choice != first)
    runners = [choice for _, choice in ranked[:2]]
    searched = [choice for choice, _, _ in later[9:]]
    block = searched[:searched.index(runners[1])]  # the first runner-up's search, then the second's begins
    assert block and set(block) == {runners[0]} and len(block) <= tuner.RUNNER_UP_SEARCH
    assert searched[len(block)] == runners[1]


def test_tuner_rejects_bad_choices():
    with pytest.raises(ValueError, match=r"solver = 'best' is not one of \['auto', 'dpmpp_1s'"):
        tune(lambda s, w: None, TABLE, 5, "best")
    with pytest.raises(ValueError, match=r"end = 'zero' is not one of \['auto', 'index', '0'\]"):
        tune(lambda s, w: None, TABLE, 5, "auto", end="zero")


# --- the params string ------------------------------------------------------------------------------

def test_params_round_trip():
    for params in (ScheduleParams.from_recipe(RECIPES["SD1.5 8-step"]),
                   ScheduleParams(5, 8, 19.8334, 6, 2.71748, (0.0876475, 0.218402, 0.411042, 0.736692), "dpmpp_2m"),
                   ScheduleParams(3, 4, 0.5, 3, 0.7)):
        text = format_params(params)
        assert parse_params(text) == params
        assert format_params(parse_params(text)) == text
    assert format_params(ScheduleParams(5, 8, 5.0, 6, 1.2)) == \
        "fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2"
    # order, spacing and surrounding blanks do not matter when written by hand
    assert parse_params("  fewstep v1:  time_rho=1.2 steps=5  end_index=6 base_rho=5 base_steps=8 ") == \
        ScheduleParams(5, 8, 5.0, 6, 1.2)
    # the string gives the recipe's schedule when it holds the recipe's values
    torch.testing.assert_close(parse_params("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2")
                               .sigmas(TABLE), recipe_sigmas(RECIPES["SD1.5 5-step"], TABLE), rtol=0, atol=0)


@pytest.mark.parametrize("text, problem", [
    ("steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2", "does not start with 'fewstep v1:'"),
    ("fewstep v2: steps=5", "does not start with"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6", "missing time_rho"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 steps=6", "steps is given twice"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 foo=1", "unknown key 'foo'"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho", "'time_rho' is not key=value"),
    ("fewstep v1: steps=five base_steps=8 base_rho=5 end_index=6 time_rho=1.2", "whole numbers"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=x end_index=6 time_rho=1.2", "must be numbers"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=nan end_index=6 time_rho=1.2", "finite"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=8 time_rho=1.2", "end_index = 8 is out of range"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=11", "time_rho = 11.0 is out of range"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 ramp=0.2,0.4,0.6", "needs 4"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 ramp=0.2,0.6,0.4,0.8", "increase strictly"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 ramp=0.2,0.4,0.6,1.0", "increase strictly"),
    ("fewstep v1: steps=5 base_steps=8 base_rho=5 end_index=6 time_rho=1.2 solver=euler", "solver = 'euler'"),
])
def test_malformed_params_are_rejected_naming_params(text, problem):
    with pytest.raises(ParamsError) as error:
        parse_params(text)
    message = str(error.value)
    assert message.startswith("params: ") and problem in message
    assert "allowed:" in message and "fewstep v1: steps=5" in message  # says what a good string looks like


# --- the nodes in a real ComfyUI --------------------------------------------------------------------

def tuner_node(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]()


def sigmas_node(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]()


def test_sigmas_node_params_input(comfy, tiny_model):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]
    optional = cls.INPUT_TYPES()["optional"]
    assert list(optional) == ["params"] and optional["params"][0] == "STRING"
    assert optional["params"][1]["default"] == "" and optional["params"][1]["multiline"] is False
    text = "fewstep v1: steps=6 base_steps=12 base_rho=7 end_index=9 time_rho=1.3 ramp=0.1,0.3,0.5,0.7,0.8"
    out = sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2, params=text)[0]
    torch.testing.assert_close(out, parse_params(text).sigmas(TABLE), rtol=2e-6, atol=0)
    assert len(out) == 7
    half = sigmas_node(comfy).get_sigmas(tiny_model, "custom", 0.5, 5, 8, 5.0, 6, 1.2, params=text)[0]
    assert len(half) == 7 and half[0] < out[0] and float(half[-1]) == pytest.approx(float(out[-1]))
    # named recipes ignore it, empty means "not given"
    torch.testing.assert_close(sigmas_node(comfy).get_sigmas(tiny_model, "SD1.5 5-step", 1.0, 5, 8, 5.0, 6, 1.2,
                                                             params=text)[0],
                               recipe_sigmas(RECIPES["SD1.5 5-step"], TABLE), rtol=2e-6, atol=0)
    assert torch.equal(sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2, params="")[0],
                       sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2)[0])
    # a malformed string is rejected at validation, naming `params`
    message = cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 1.0, params="fewstep v1: steps=5")
    assert message.startswith("params: missing base_steps") and "allowed:" in message
    assert cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 1.0, params=text) is True
    assert cls.VALIDATE_INPUTS("SD1.5 5-step", 5, 8, 5.0, 6, 1.2, 1.0, params="junk") is True  # ignored there
    assert "denoise = 0.0" in cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 0.0, params=text)
    # params linked to another node (the tuner's params output): CURRENT validates with None for a link; the
    # string is checked when the node runs. Before, this raised AttributeError inside ComfyUI's validation.
    assert cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 1.0, params=None) is True
    assert "denoise = 0.0 is out of range" in cls.VALIDATE_INPUTS("custom", 5, 8, 5.0, 6, 1.2, 0.0, params=None)
    assert cls.VALIDATE_INPUTS("SD1.5 5-step", 5, 8, 5.0, 6, 1.2, 1.0, params=None) is True
    with pytest.raises(ValueError, match="Few-Step Sigmas: params: "):
        sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2, params="fewstep v1: x=1")


def test_tuner_node_declaration(comfy):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS["FewStepScheduleTuner"] == "Few-Step Schedule Tuner"
    assert cls is comfy.pack.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]
    assert cls.CATEGORY == "sampling/custom_sampling/schedulers"
    assert cls.RETURN_TYPES == ("SIGMAS", "STRING")
    assert list(cls.INPUT_TYPES()["required"]) == ["model", "positive", "negative", "cfg", "latent_image", "nfe",
                                                   "solver", "probe_seeds", "tuning_seed", "time_budget"]
    assert not hasattr(cls, "IS_CHANGED")  # a pure function of its inputs: ComfyUI's own cache applies


def test_tuner_node_rejects_bad_inputs(comfy, tiny_model, conds):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]
    good = dict(cfg=5.5, nfe=5, solver="dpmpp_2m", probe_seeds=2, tuning_seed=0, time_budget=10.0)
    assert cls.VALIDATE_INPUTS(**good) is True
    for change, expected in ((dict(nfe=1), "nfe = 1 is out of range: allowed 2 to 50"),
                             (dict(nfe=51), "nfe = 51 is out of range"),
                             (dict(solver="euler"),
                              "solver = 'euler' is not one of ['auto', 'dpmpp_1s', 'dpmpp_2m', 'unipc', 'unipc_afs']"),
                             (dict(probe_seeds=0), "probe_seeds = 0 is out of range: allowed 1 to 128"),
                             (dict(probe_seeds=129), "probe_seeds = 129 is out of range"),
                             (dict(time_budget=0.5), "time_budget = 0.5 is out of range: allowed 1.0 to 3600.0"),
                             (dict(cfg=-1.0), "cfg = -1.0 is out of range")):
        assert cls.VALIDATE_INPUTS(**{**good, **change}).startswith(expected)
    with pytest.raises(ValueError, match="Few-Step Schedule Tuner: nfe = 0"):
        cls().tune(tiny_model, conds[0], conds[1], 5.5, latent(8), 0, "dpmpp_2m", 2, 0, 10.0)
    video = {"samples": torch.zeros(1, 4, 2, 8, 8)}
    with pytest.raises(ValueError, match=r"latent_image must be an image latent .* got shape \(1, 4, 2, 8, 8\)"):
        cls().tune(tiny_model, conds[0], conds[1], 5.5, video, 5, "dpmpp_2m", 2, 0, 10.0)


def seconds_per_evaluation(comfy, model, conds) -> float:
    """This machine's time for one guided evaluation of the tiny UNet on the test's probe batch, right now."""
    sampler = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepDPMPPSampler"]().get_sampler("dpmpp_2m", "last_sigma")[0]
    sigmas = recipe_sigmas(RECIPES["SD1.5 5-step"], TABLE)
    began = time.monotonic()
    with torch.no_grad():
        comfy.custom_sampler.SamplerCustom().sample(model, True, 0, 5.5, conds[0], conds[1], sampler, sigmas,
                                                    latent(8, batch=2))
    return (time.monotonic() - began) / 5


@pytest.fixture(scope="module")
def node_run(comfy, tiny_model, conds):
    """One tuning run of the node on the tiny real UNet, with a time budget worth about 40 + 30 evaluations
    on this machine now (the reference takes 40): (budget, model, calls, outputs, seconds, progress updates)."""
    comfy.pack.nodes.tuning.CACHE.clear()
    comfy.pack.nodes.tuning.REFERENCES.clear()
    per_evaluation = seconds_per_evaluation(comfy, tiny_model, conds)
    # the floor: on a heavily loaded machine a floor of 5 s once bought the reference and a single candidate
    budget = float(math.ceil(max(10.0, 70 * per_evaluation)))
    model, calls = count_evaluations(tiny_model)
    updates = []
    import comfy.utils as comfy_utils

    previous = comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(
        lambda value, total, preview, *rest, **named: updates.append((value, total)))
    try:
        began = time.monotonic()
        outputs = tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 2, 3, budget)
        seconds = time.monotonic() - began
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
    return budget, model, calls, outputs, seconds, updates


def test_tuner_node_on_a_real_unet(comfy, tiny_model, node_run):
    budget, model, calls, (sigmas, text), seconds, updates = node_run
    result = next(iter(comfy.pack.nodes.tuning.CACHE.entries.values()))[1]
    print(f"node {seconds:.2f} s (budget {budget:.0f} s), search {result.seconds:.2f} s, {result.candidates} "
          f"schedules, {result.start_objective:.4f} -> {result.objective:.4f}, {result.stopped_by}")
    assert seconds < budget + 2.0  # model loading, conditioning and rounding of slack
    assert result.candidates > 1 and result.objective < result.start_objective  # it searched, and found better
    end_zero = parse_params(text).end_zero  # the end the tuner chose: the early stop, or the last step to 0
    assert valid_schedule(sigmas, 5, end_zero) and len(sigmas) == 6 and (float(sigmas[-1]) == 0) == end_zero
    assert float(sigmas[0]) == pytest.approx(SIGMA_MAX, rel=1e-6)
    assert parse_params(text).solver == "dpmpp_2m"
    # 40 reference evaluations, then whole schedules of 5, all with the probe batch (cond + uncond)
    assert len(calls) >= 45 and (len(calls) - 40) % 5 == 0
    # FewStepSigmas with the params string gives exactly the tuner's schedule
    again = sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2, params=text)[0]
    assert torch.equal(again, sigmas)
    # ComfyUI's progress bar counts candidate schedules against the search's cap, ending full
    cap = comfy.pack.nodes.tuning.MAX_CANDIDATES
    assert updates and updates[-1] == (cap, cap) and {total for _, total in updates} == {cap}
    assert f"{cap} candidate schedules" in comfy.pack.nodes.tuner.FewStepScheduleTuner.DESCRIPTION  # what a user reads
    values = [v for v, _ in updates]
    assert values == sorted(values) and values[:result.candidates] == list(range(1, result.candidates + 1))


def test_tuner_node_tunes_unipc_afs_on_a_real_unet(comfy, tiny_model, conds):
    """solver=unipc_afs: every candidate runs UniPC with the analytical first step on the model (no evaluation at
    sigma_max but the reference's), and Few-Step Sigmas' params reproduces the tuned sigmas exactly."""
    model, calls = count_evaluations(tiny_model)
    budget = float(math.ceil(max(5.0, 60 * seconds_per_evaluation(comfy, tiny_model, conds))))
    sigmas, text = tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 6, "unipc_afs", 2, 5, budget)
    assert parse_params(text).solver == "unipc_afs" and valid_schedule(sigmas, 6, parse_params(text).end_zero)
    assert len(calls) > 40 and (len(calls) - 40) % 6 == 0
    # (the unet wrapper sees sigmas) the reference's first evaluation only: AFS never evaluates the first sigma
    assert sum(1 for sigma in calls if sigma == pytest.approx(SIGMA_MAX, rel=1e-6)) == 1
    again = sigmas_node(comfy).get_sigmas(tiny_model, "custom", 1.0, 5, 8, 5.0, 6, 1.2, params=text)[0]
    assert torch.equal(again, sigmas)


def test_tuner_node_cache(comfy, tiny_model, conds, node_run):
    budget, model, calls, (sigmas, text), _, _ = node_run
    before = len(calls)
    again = tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 2, 3, budget)
    assert len(calls) == before  # not one model evaluation
    assert torch.equal(again[0], sigmas) and again[1] == text
    again[0][0] = 0.0  # the caller's copy: the cached schedule is not touched
    assert torch.equal(tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 2, 3,
                                              budget)[0], sigmas)
    # a clone with the same patches is the same model; other conds or another patch are not
    tuning = comfy.pack.nodes.tuning
    same = tuning.cache_key(model.clone(), conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget)
    assert tuning.CACHE.get(*same) is not None
    other_conds = [[conds[0][0][0] + 1e-3, {}]]
    for key in (tuning.cache_key(model, other_conds, conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget),
                tuning.cache_key(model, conds[0], conds[1], 6.0, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget),
                tuning.cache_key(model, conds[0], conds[1], 5.5, (4, 8, 16), 5, "dpmpp_2m", 2, 3, budget),
                tuning.cache_key(count_evaluations(model)[0], conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3,
                                 budget)):
        assert tuning.CACHE.get(*key) is None


def test_tuner_node_reuses_the_reference(comfy, tiny_model, conds, node_run, caplog):
    """Another solver and NFE on the same model, conds, cfg, latent size, probes and seed: no new reference. With
    unipc_afs no candidate evaluates sigma_max, so an evaluation there would be the reference's first one."""
    import logging

    _, model, calls, _, _, _ = node_run
    budget = 2.0  # seconds: what is under test is the reference, not how far the search gets
    tuning = comfy.pack.nodes.tuning
    before = len(calls)
    with caplog.at_level(logging.INFO, logger="ComfyUI-FewStep"):
        sigmas, text = tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 6, "unipc_afs", 2, 3, budget)
    new = calls[before:]
    assert new and len(new) % 6 == 0  # whole candidates of 6 evaluations, no 40 of a reference
    assert not any(sigma == pytest.approx(SIGMA_MAX, rel=1e-6) for sigma in new)
    result = tuning.CACHE.get(*tuning.cache_key(model, conds[0], conds[1], 5.5, (4, 8, 8), 6, "unipc_afs", 2, 3,
                                                budget))
    assert result is not None and result.model_evaluations == len(new) == 6 * result.candidates
    # the console line: candidates and the share of the starting distance removed
    removed = 100.0 * (result.start_objective - result.objective) / result.start_objective
    assert f"({result.candidates} candidate schedules, removed {removed:.0f} % of the starting distance" in caplog.text
    assert "reference reused" in caplog.text
    # another tuning seed (other probe noises): the reference is computed again, once
    before = len(calls)
    tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 6, "unipc_afs", 2, 4, budget)
    assert sum(1 for sigma in calls[before:] if sigma == pytest.approx(SIGMA_MAX, rel=1e-6)) == 1
    assert (len(calls) - before - 40) % 6 == 0


def random_taesd_vae(latent_channels: int = 4):
    """ComfyUI's own VAE class (comfy.sd.VAE) on a TAESD state dict of seeded random weights (64x64 images from
    8x8 latents); ``latent_channels`` other than 4 only where ComfyUI's TAESD takes it (CURRENT)."""
    import comfy.sd
    import comfy.taesd.taesd as taesd

    module = taesd.TAESD(**({} if latent_channels == 4 else {"latent_channels": latent_channels}))
    generator = torch.Generator().manual_seed(latent_channels)
    state = {}
    for key, value in module.state_dict().items():  # its layers are not initialised (comfy.ops)
        if value.dim() > 1:
            state[key] = torch.randn(value.shape, generator=generator) / math.sqrt(value[0].numel())
        else:
            state[key] = torch.ones(value.shape) if key.endswith("vae_scale") else torch.zeros(value.shape)
    return comfy.sd.VAE(sd=state)


def ksampler_latent(comfy, model, conds, seed: int, probes: int, text: str) -> torch.Tensor:
    """Few-Step KSampler, recipe `custom` with ``text``, on a batch of ``probes`` 8x8 latents from ``seed``: the
    tuner's probe noises. Returned in the sampler's latent space (as the tuner compares it)."""
    node = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]()
    out = node.sample(model, seed, 5.5, "custom", "recipe", conds[0], conds[1], latent(8, batch=probes), 1.0, text)
    return model.model.process_latent_in(out[0]["samples"])


def test_tuner_node_auto_solver_and_end_sample_what_was_tuned(comfy, tiny_model, conds):
    """solver=auto on a real UNet: the node screens the solvers and both ends, returns the best in `params`, and
    Few-Step KSampler with recipe `custom` and that text reproduces the tuner's best distance on its probe noises."""
    tuning = comfy.pack.nodes.tuning
    budget = float(math.ceil(max(10.0, 110 * seconds_per_evaluation(comfy, tiny_model, conds))))
    sigmas, text = tuner_node(comfy).tune(tiny_model, conds[0], conds[1], 5.5, latent(8), 5, "auto", 2, 7, budget)
    result = tuning.CACHE.get(*tuning.cache_key(tiny_model, conds[0], conds[1], 5.5, (4, 8, 8), 5, "auto", 2, 7,
                                                budget))
    print(f"auto: {result.candidates} schedules, {result.start_objective:.4f} -> {result.objective:.4f}, {text}; "
          f"ends {result.ends}")
    assert result.candidates >= 12 and len(result.solvers) == 10  # the screen ran in full: 2 ends, 10 solvers
    assert all(math.isfinite(v) for v in result.ends.values()) and result.objective == min(result.ends.values())
    params = parse_params(text)
    # on the model's own table, as Few-Step KSampler reads it (ComfyUI's float32 table is 5e-7 off TABLE)
    api = comfy.pack.nodes.comfy_api
    model_table = api.discrete_sigma_table(api.model_sampling_of(tiny_model))
    assert torch.equal(sigmas, make_plan("custom", params=text, sigma_table=model_table).sigmas)
    assert (params.end == "0") == (float(sigmas[-1]) == 0.0)
    reference = tuning.REFERENCES.get(*tuning.reference_key(tiny_model, conds[0], conds[1], 5.5, (4, 8, 8), 2, 7))
    sampled = ksampler_latent(comfy, tiny_model, conds, 7, 2, text)
    assert distance(sampled, reference) == pytest.approx(result.objective, rel=1e-4)


def test_tuner_node_measures_on_decoded_images_with_a_vae(comfy, tiny_model, conds, node_run):
    """With a vae (ComfyUI's VAE class, random TAESD weights) the distances compare decoded images, area-averaged
    to at most 64x64; the latent reference of the same inputs is reused, the result is cached apart from the
    latent one, and Few-Step KSampler with the text reproduces the tuned distance on the decoded probes."""
    _, model, calls, _, _, _ = node_run
    tuning = comfy.pack.nodes.tuning
    vae = random_taesd_vae()
    measure = tuning.decoded_measure(vae, model)
    assert measure(torch.zeros(2, 4, 8, 8)).shape == (2, 3, 64, 64)
    assert measure(torch.zeros(2, 4, 16, 12)).shape == (2, 3, 64, 48)  # 128x96 pixels, area-averaged
    budget = 3.0  # seconds: the screen of the two ends at least
    before = len(calls)
    sigmas, text = tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 2, 3, budget,
                                          vae)
    new = calls[before:]
    key = tuning.cache_key(model, conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget, vae)
    result = tuning.CACHE.get(*key)
    assert result is not None and result.candidates >= 2 and len(new) == 5 * result.candidates  # no new reference
    assert key[0] != tuning.cache_key(model, conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget)[0]
    assert tuning.CACHE.get(*tuning.cache_key(model, conds[0], conds[1], 5.5, (4, 8, 8), 5, "dpmpp_2m", 2, 3, budget,
                                              random_taesd_vae())) is None  # another vae: another result
    reference = tuning.REFERENCES.get(*tuning.reference_key(model, conds[0], conds[1], 5.5, (4, 8, 8), 2, 3))
    sampled = ksampler_latent(comfy, model, conds, 3, 2, text)
    assert distance(measure(sampled), measure(reference)) == pytest.approx(result.objective, rel=1e-4)
    assert distance(sampled, reference) != pytest.approx(result.objective, rel=1e-2)  # not the latent distance


def test_tuner_node_rejects_a_vae_of_another_latent_space(comfy, tiny_model, conds):
    """Before any model evaluation, naming `vae`: a VAE whose latents have other channels than latent_image."""
    import inspect

    import comfy.taesd.taesd as taesd

    cls = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]
    assert cls.INPUT_TYPES()["optional"]["vae"][0] == "VAE"
    model, calls = count_evaluations(tiny_model)
    sixteen = {"samples": torch.zeros(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="Few-Step Schedule Tuner: vae decodes latents of 4 channels, but "
                                         "latent_image has 16: connect the VAE of the model being tuned"):
        cls().tune(model, conds[0], conds[1], 5.5, sixteen, 5, "auto", 2, 0, 10.0, random_taesd_vae())
    if "latent_channels" in inspect.signature(taesd.TAESD).parameters:  # CURRENT: a 16-channel TAESD
        with pytest.raises(ValueError, match="vae decodes latents of 16 channels, but latent_image has 4"):
            cls().tune(model, conds[0], conds[1], 5.5, latent(8), 5, "auto", 2, 0, 10.0, random_taesd_vae(16))
    with pytest.raises(ValueError, match="Few-Step Schedule Tuner: vae must be a VAE"):
        cls().tune(model, conds[0], conds[1], 5.5, latent(8), 5, "auto", 2, 0, 10.0, "not a vae")
    assert calls == []


def test_tuner_node_is_interrupted_by_comfyui(comfy, tiny_model, conds):
    """ComfyUI's own interrupt flag (what the UI's Cancel sets) stops the search at the next evaluation."""
    import comfy.model_management as mm

    model, calls = count_evaluations(tiny_model)

    def interrupt_after_three(apply_model, args):
        calls_before = len(calls)
        if calls_before == 3:
            mm.interrupt_current_processing(True)
        calls.append(1)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(interrupt_after_three)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            tuner_node(comfy).tune(model, conds[0], conds[1], 5.5, latent(8), 5, "dpmpp_2m", 1, 0, 60.0)
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) == 4
    assert not mm.processing_interrupted()


def test_schedule_route_follows_the_params_string(comfy):
    """The graph editor's schedule preview (nodes/routes.py) draws what a params string gives."""
    import importlib

    routes = importlib.import_module(f"{comfy.pack.__name__}.nodes.routes")
    text = ("fewstep v1: steps=6 base_steps=12 base_rho=7 end_index=9 time_rho=1.3 ramp=0.1,0.3,0.5,0.7,0.8 "
            "solver=dpmpp_2m")
    query = dict(recipe="custom", denoise="1.0", steps="5", base_steps="8", base_rho="5", end_index="6",
                 time_rho="1.2", params=text)
    status, body = routes.schedule_reply(query)
    assert status == 200 and body["nfe"] == 6 and body["solver"] == "dpmpp_2m"
    assert body["params"] == {"steps": 6, "base_steps": 12, "base_rho": 7.0, "end_index": 9, "time_rho": 1.3,
                              "denoise": 1.0}
    torch.testing.assert_close(torch.tensor(body["sigmas"]), parse_params(text).sigmas(TABLE), rtol=2e-6, atol=0)
    status, body = routes.schedule_reply({**query, "params": "fewstep v1: x"})
    assert status == 400 and body["error"].startswith("Few-Step Sigmas: params: 'x' is not key=value")
