"""The quality benchmark's scores and ranking: every method run on every model, ranked per budget.

The scores per seed (``quality_scores.py``: ``Row``, and how an analytic model or a trained network scores a
method), their means with 95 % intervals, the paired difference to a budget's winner, and whether a Few-Step
method is first. Then the DPM++2M Karras sweep and the quality-equivalent speed-up per budget (``speedups``), and
the tuner's share of the ceiling search's gain (``ceiling_shares``).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass, field, replace
from functools import partial
from types import SimpleNamespace

import torch
from quality_ceiling import Ceiling, CeilingCache
from quality_methods import Config, Harness, Method, end_sigma, load_comfyui, plan, short
from quality_models import MODELS
from quality_scores import AnalyticScorer, Row, TrainedScorer
from quality_trained import TrainedTarget, torch_threads, trained_models
from quality_tuning import Learning, Tuning, tuned_methods
from quality_yardsticks import ReferenceShift, speedup_steps

log = logging.getLogger("quality")


# The distances the speed-up is measured in: FD (the ranking's) and RMS at 0 to the same-noise reference, which
# keeps falling as a sampler converges where FD meets its finite-sample floor.
METRICS = ("RMS at 0", "FD")


@dataclass
class SpeedUp:
    """The quality-equivalent speed-up at one budget: the steps DPM++2M Karras (and the best core pair at each step
    count) needs to reach the best Few-Step row's FD."""

    budget: int
    metric: str  # of METRICS
    target: float  # the best Few-Step row's mean distance in that metric
    row: str  # its name
    converged: float  # DPM++2M Karras's distance at the most steps searched (the target may lie below it)
    dpmpp: tuple[int | None, float | None]  # (first integer M, interpolated M)
    core: tuple[int | None, float | None]


@dataclass
class Results:
    """Every method's scores on one model, and what the run left out."""

    config: Config
    label: str
    rows: list[Row]
    skipped_samplers: dict[str, str]
    unfit: dict[str, str]  # method @ budget -> reason
    floor: Row | None  # analytic: exact samples from the mixture (FD's finite-sample floor); trained: None
    reference_check: float  # analytic: RMS(ref_N - ref_N/2) at sigma 0 (seed 0)
    seconds: float
    machine: str
    tunings: list[Tuning] = field(default_factory=list)
    model: str = "anisotropic"  # the key of MODELS or of the trained models
    description: str = ""
    trained: bool = False
    seeds: int = 0
    samples: int = 0
    shift: ReferenceShift | None = None  # trained: the reference against twice as many steps
    screened: dict[int, int] = field(default_factory=dict)  # trained: budget -> core pairs screened
    ceilings: list = field(default_factory=list)  # quality_ceiling.Ceiling per ceiling budget
    learnings: list[Learning] = field(default_factory=list)  # the tuner's learn from the best tuned schedule
    sweep: dict[int, Row] = field(default_factory=dict)  # DPM++2M Karras by step count
    envelope: dict[tuple[str, int], tuple[float, str]] = field(default_factory=dict)  # (metric, steps) -> best core
    speedups: list[SpeedUp] = field(default_factory=list)
    reference_preview: torch.Tensor | None = None  # trained: the reference's first PREVIEW samples

    def table(self, budget: int | None) -> list[Row]:
        """The rows competing at ``budget``, best FD first (non-finite FD last)."""
        rows = [r for r in self.rows if r.method.budget == budget and r.method.family != "baseline"]
        return sorted(rows, key=lambda r: (not math.isfinite(Row.stats(r.fd)[0]), Row.stats(r.fd)[0]))

    def baseline(self) -> Row:
        """The baseline row (DPM++2M Karras, 20 steps)."""
        return next(r for r in self.rows if r.method.family == "baseline")

    def off_budget(self) -> list[Row]:
        """The rows that compete at no budget (a recipe whose NFE is not one of the budgets)."""
        return [r for r in self.rows if r.method.budget is None and r.method.family != "baseline"]

    def best_fewstep(self, budget: int, metric: str = "FD") -> Row | None:
        """The best Few-Step row (recipe or tuned; not the ceiling) at ``budget`` in ``metric``."""
        rows = [r for r in self.table(budget) if r.method.pack]
        return min(rows, key=lambda r: r.mean(metric)) if rows else None


@dataclass
class Suite:
    """One run: the same methods ranked on each model of ``config.models``."""

    config: Config
    label: str
    models: list[Results]
    seconds: float
    machine: str

    def model(self, name: str) -> Results:
        """The results on the model ``name``."""
        return next(r for r in self.models if r.model == name)


def trained_tuning(config: Config) -> Config:
    """The tuning and learned fits' config on a trained model: its own solvers and learn modes."""
    return replace(config, tune_solvers=config.trained_tune_solvers, learn_modes=config.trained_learn_modes,
                   learn_runs=config.trained_learn_runs, learn_seconds=config.trained_learn_seconds,
                   learn_larger=config.trained_learn_larger)


# Measured seconds per model alone (0.3.64, 2026-12-05), longest first: the order the workers take the models in, so
# that the last one to start is a short one. A model not named here starts first.
LONGEST_FIRST = ("digits_cond_cfg5", "photo_v_zsnr", "photo_eps", "digits_cond_cfg1", "spheres", "clustered",
                 "anisotropic")


def run(config: Config = Config(), comfy: SimpleNamespace | None = None, ceilings: CeilingCache | None = None,
        patchers: dict | None = None) -> Suite:
    """Plan the methods once per sigma table, then per model tune the schedules and score every method: with
    ``config.workers`` > 1 (and more than one model) the models in that many worker processes at once, each on one
    torch thread. ``patchers``: ComfyUI models to use for trained models instead of the shipped proxies (tests)."""
    if config.workers > 1 and len(config.models) > 1 and comfy is None and not patchers:
        return _run_in_workers(config, ceilings)
    with torch_threads(config.threads):
        return _run(config, comfy or load_comfyui(), ceilings, patchers or {})


def _run_in_workers(config: Config, ceilings: CeilingCache | None) -> Suite:
    """Each model in one of ``config.workers`` fresh processes (spawned: each imports the ComfyUI under test, as
    COMFYUI_PATH or PINNED says), the longest first; the ceiling searches a worker ran are put in ``ceilings`` here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    began = time.perf_counter()
    load_comfyui()  # here too: the results sent back hold the pack's and ComfyUI's classes
    known = ceilings.entries if ceilings is not None else None  # each worker gets its own copy
    order = sorted(config.models, key=lambda name: LONGEST_FIRST.index(name) if name in LONGEST_FIRST else -1)
    log.info("%d models in %d worker processes, 1 torch thread each: %s", len(order), config.workers, ", ".join(order))
    with ProcessPoolExecutor(config.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_model_in_worker, config, name, known) for name in order}
        done = {name: future.result() for name, future in futures.items()}
    models = []
    for name in config.models:
        results, added = done[name]
        for key, entry in added.items():
            ceilings.put(key, Ceiling(**entry))
        models.append(results)
    machine = machine_description(f"{config.workers} worker processes of 1 torch thread, one model each at a time")
    for results in models:
        results.machine = machine
    return Suite(config, models[0].label, models, time.perf_counter() - began, machine)


def _model_in_worker(config: Config, name: str, ceilings: dict | None) -> tuple[Results, dict]:
    """One model's results in a worker process (1 torch thread), and the ceiling searches it ran."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = CeilingCache.in_memory(ceilings) if ceilings is not None else None
    one = replace(config, models=(name,), workers=1, threads=1, trained_threads=1)
    results = run(one, ceilings=cache).models[0]
    return results, cache.added if cache is not None else {}


def machine_description(threads: str | None = None) -> str:
    """The machine a report was measured on: platform, processor, torch threads (or ``threads``, what ran the
    models), Python and torch versions."""
    threads = threads or f"{torch.get_num_threads()} torch thread(s)"
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {threads}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _run(config: Config, comfy: SimpleNamespace, ceilings, patchers: dict) -> Suite:
    began = time.perf_counter()
    trained = trained_models() if any(name not in MODELS for name in config.models) else {}
    machine = machine_description()
    plans: dict[tuple, tuple[Harness, tuple]] = {}
    models = []
    for name in config.models:
        model_began = time.perf_counter()
        target, model_config = None, config
        if name in MODELS:
            mixture = MODELS[name][1](config.mixture_seed)
            model_sampling, description = comfy.model_sampling, MODELS[name][0]
        else:
            target = TrainedTarget(comfy, trained[name], patchers.get(trained[name].proxy), config.trained_threads)
            mixture = MODELS["anisotropic"][1](config.mixture_seed)  # plans the schedules and counts evaluations
            model_sampling, description = target.ms, trained[name].description
        table_key = (float(model_sampling.sigma_max), float(model_sampling.sigma_min))
        if table_key not in plans:
            harness = Harness(comfy, mixture, model_sampling)
            plans[table_key] = (harness, plan(harness, config))
            log.info("planned %d methods (%.0f s)", len(plans[table_key][1][0]), time.perf_counter() - began)
        harness, (methods, skipped, unfit) = plans[table_key]
        harness.use(mixture)
        if target is None:
            tuned_rows, tunings, learnings, found = tuned_methods(harness, config, name, ceilings=ceilings)
            scorer = AnalyticScorer(harness, config)
        else:
            tuned_rows, tunings, learnings, found = tuned_methods(
                harness, trained_tuning(config), name, target.with_denoiser,
                config.trained_tune_probes, ceilings, config.trained_learn_probes)
            model_config = replace(config, trend_core=config.trained_trend_core,
                                   speedup_pairs=config.trained_speedup_pairs)
            scorer = TrainedScorer(target, harness, config)
        results = Results(model_config, comfy.label, [], skipped, unfit, getattr(scorer, "floor", None), math.nan, 0.0,
                          machine, tunings, name, description, target is not None, scorer.seeds, scorer.samples,
                          ceilings=found, learnings=learnings)
        score_model(results, scorer, harness, methods + tuned_rows)
        results.seconds = time.perf_counter() - model_began
        log.info("%s done (%.0f s)", name, results.seconds)
        models.append(results)
    return Suite(config, comfy.label, models, time.perf_counter() - began, machine)


def score_model(results: Results, scorer, harness: Harness, methods: list[Method]) -> None:
    """Score the ranked rows (every core pair; on trained models the screen's best), the trend rows, then the
    DPM++2M Karras sweep and the speed-up table."""
    config = results.config
    ranked = set(config.ranked_budgets)
    core = [m for m in methods if not m.pack and m.family not in ("baseline", "ceiling")]
    core_ids = {id(m) for m in core}
    others = [m for m in methods if id(m) not in core_ids]
    chosen = [m for m in core if m.budget in ranked]
    if results.trained:
        chosen, results.screened = scorer.screen(chosen, config.trained_keep)
    scorer.prepare(methods)
    results.rows = [scorer.score(m) for m in chosen + others]
    results.reference_check = getattr(scorer, "reference_check", math.nan)
    # the trend budgets: the best core pairs of the last ranked budget
    last = max(ranked)
    pairs = [(r.method.sampler, r.method.scheduler) for r in results.table(last) if not r.method.pack
             and r.method.family != "ceiling"][:config.trend_core]
    trend = [m for m in core if m.budget not in ranked and (m.sampler, m.scheduler) in pairs]
    results.rows += [scorer.score(m) for m in trend]
    if results.trained:
        ranked_rows = [r for b in ranked for r in results.table(b)]
        results.shift = scorer.shift(ranked_rows)
        results.reference_preview = scorer.preview_reference
    if config.speedup:
        speedups(results, scorer, harness, pairs[:config.speedup_pairs])


def speedups(results: Results, scorer, harness: Harness, pairs: list[tuple[str, str]]) -> None:
    """For each budget and metric, the DPM++2M Karras steps (and the steps of the best core pair at each step count)
    at which the best Few-Step row's distance is first reached (``quality_yardsticks.speedup_steps``)."""
    extra: dict[tuple[str, str, int], Row | None] = {}

    def dpmpp(m: int) -> Row:
        if m not in results.sweep:
            sampler, scheduler = results.config.sweep
            sigmas = harness.ksampler_sigmas(sampler, scheduler, m)
            make = partial(harness.comfy.samplers.sampler_object, sampler)
            method = Method(f"{sampler} / {scheduler}, {m} steps", "sweep", sampler, scheduler, m, sigmas, make,
                            end_sigma(sampler, sigmas), None, nfe=m)
            results.sweep[m] = scorer.score(method, stops=False)
        return results.sweep[m]

    def core_rows(m: int) -> list[Row]:
        rows = [dpmpp(m)]
        if m in results.config.budgets:
            rows += [r for r in results.table(m) if not r.method.pack and r.method.family != "ceiling"]
        for sampler, scheduler in pairs:
            key = (sampler, scheduler, m)
            if key not in extra:
                method = harness.core_method(sampler, _scheduler_name(harness, scheduler), m)
                extra[key] = scorer.score(method, stops=False) if not isinstance(method, str) else None
            if extra[key] is not None:
                rows.append(extra[key])
        return rows

    for metric in METRICS:
        sweep_curve: dict[int, float] = {}
        core_curve: dict[int, float] = {}

        def best_core(m: int, metric=metric) -> float:
            rows = core_rows(m)
            if metric == "RMS at 0":  # RMS is to the ODE solution from a method's own start: only full starts compare
                rows = [r for r in rows if float(r.method.sigmas[0]) >= float(harness.ms.sigma_max) * (1 - 1e-6)]
            row = min(rows, key=lambda r: r.mean(metric))
            results.envelope[(metric, m)] = (row.mean(metric), row.method.name)
            return row.mean(metric)

        for budget in results.config.budgets:
            best = results.best_fewstep(budget, metric)
            if best is None or not math.isfinite(best.mean(metric)):
                continue
            target = best.mean(metric)
            found = speedup_steps(lambda m, metric=metric: dpmpp(m).mean(metric), target, curve=sweep_curve)
            core = speedup_steps(best_core, target, curve=core_curve)
            results.speedups.append(SpeedUp(budget, metric, target, best.method.name,
                                            dpmpp(max(sweep_curve)).mean(metric), found, core))


def _scheduler_name(harness: Harness, shown: str) -> str:
    """The scheduler's own name for the name a table shows (AYS / GITS)."""
    return {short(name): name for name in harness.core_schedulers(None)}.get(shown, shown)


def fmt(values: list[float], digits: int = 3) -> str:
    """Mean ± 95 % half-width of per-seed values (the mean alone with one seed)."""
    mean, half = Row.stats(values)
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}g} ± {half:.2g}" if half else f"{mean:.{digits}g}"


def paired(row: Row, first: Row | None) -> str:
    """FD difference to the budget's winner, seed by seed (all methods share each seed's noise)."""
    if first is None or first is row:
        return "-"
    return fmt([a - b for a, b in zip(row.fd, first.fd)], 2)


def tuned(method: Method) -> bool:
    """Whether a method is a schedule the tuner found."""
    return method.family.startswith("FewStep tuned")


def learned(method: Method) -> bool:
    """Whether a method is the tuner's learn (solver weights, model times) from a tuned schedule."""
    return method.family.startswith("FewStep learned")


def runner_up(table: list[Row]) -> str:
    """'#2 name FD, #2 − #1 paired' for a budget's table."""
    if len(table) < 2:
        return "no runner-up"
    return f"#2 {table[1].method.name} FD {fmt(table[1].fd)}, #2 − #1 paired {paired(table[1], table[0])}"


def contest(results: Results, budget: int) -> list[Row]:
    """The table the target is read on: every row but the ceiling's (a yardstick for the tuner, not a method a
    user gets without that long search)."""
    return [r for r in results.table(budget) if r.method.family != "ceiling"]


def target(results: Results, budget: int) -> tuple[bool, str]:
    """Whether a Few-Step method (recipe, tuned schedule or learned) is first at ``budget`` among the pack's rows and
    the core pairs, and the line that says so: with the paired interval to the runner-up, or the best Few-Step row's
    paired gap to the winner."""
    table = contest(results, budget)
    winner = table[0]
    if winner.method.pack:
        return True, f"#1 **{winner.method.name}** FD {fmt(winner.fd)}; {runner_up(table)}"
    rank, best = next((i + 1, r) for i, r in enumerate(table) if r.method.pack)
    return False, (f"#1 {winner.method.name} FD {fmt(winner.fd)} (not Few-Step); best Few-Step **{best.method.name}** "
                   f"rank {rank}, FD {fmt(best.fd)}, paired vs #1 {paired(best, winner)}")


def first_or_tied(results: Results, budget: int) -> str:
    """"first" when a Few-Step row (recipe or tuned) is #1 at ``budget``; "tied" when the best one's paired 95 %
    interval against #1 reaches 0; else "no"."""
    table = contest(results, budget)
    if table[0].method.pack:
        return "first"
    best = results.best_fewstep(budget)
    if best is None:
        return "no"
    mean, half = Row.stats([a - b for a, b in zip(best.fd, table[0].fd)])
    return "tied" if mean - half <= 0 else "no"


def ceiling_shares(results: Results) -> list[tuple[int, float, float, float, float, str]]:
    """Per ceiling budget: (budget, recipe objective, best tuned objective, ceiling objective, the tuned share of
    the ceiling's gain, the best tuned solver), all on the tuner's probes and reference."""
    out = []
    for ceiling in results.ceilings:
        runs = [t for t in results.tunings if t.budget == ceiling.budget]
        if not runs:
            continue
        best = min(runs, key=lambda t: t.result.objective)
        out.append((ceiling.budget, ceiling.recipe_objective, best.result.objective, ceiling.objective,
                    ceiling.share(best.result.objective), best.solver))
    return out


def headline(results: Results) -> list[str]:
    """The lines that sum up one model: the target per budget, our best rows, the baseline and the floor."""
    lines = []
    for budget in results.config.budgets:
        table = results.table(budget)
        winner = table[0]
        lines.append(f"NFE {budget}: " + target(results, budget)[1])
        for kind, wanted in (("recipe", lambda m: m.pack and not tuned(m) and not learned(m)), ("tuned", tuned),
                             ("learned", learned)):
            ours = [(i + 1, r) for i, r in enumerate(table) if wanted(r.method)]
            if ours:
                rank, best = ours[0]
                lines.append(f"NFE {budget}: our best {kind} {best.method.name} FD {fmt(best.fd)} (rank {rank} of "
                             f"{len(table)}, {paired(best, winner)} paired vs #1)")
    base = results.baseline()
    floor = f"exact-sample floor FD {fmt(results.floor.fd)}" if results.floor else "FD to the reference"
    lines.append(f"baseline {base.method.name}: NFE {base.method.nfe}, FD {fmt(base.fd)}; {floor}")
    for budget, recipe, tuned_value, ceiling, share, solver in ceiling_shares(results):
        lines.append(f"NFE {budget}: tuner objective recipe {recipe:.4f}, tuned ({solver}) {tuned_value:.4f}, ceiling "
                     f"{ceiling:.4f}: the tuner reaches {100 * share:.0f} % of the ceiling's gain")
    if results.shift is not None:
        s = results.shift
        lines.append(f"reference {s.steps} vs {2 * s.steps} steps (seed 0): RMS {s.rms:.2g}, FD between them "
                     f"{s.fd_between:.2g}, largest change of a ranked row's FD {s.fd_shift:.2g}")
    return lines
