"""The quality benchmark's rows made per model: tuned schedules, the tuner's learned fits, the ceiling search.

For each budget the pack's tuner (``fewstep.tuner.tune``, one run per solver of the config) on probe noises disjoint
from the evaluation noises; at the learn budgets the tuner's ``learn`` (``fewstep.tuner_learn``) from the best tuned
schedule, judged on held-out noises; at the ceiling budgets the long generic search (``quality_ceiling``). Each
becomes a method sampled through the pack's nodes with its ``params`` text, like a user would paste it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from quality_methods import HELD_OUT_SEED, LEARN_SEED, TUNE_SEED, Config, Harness, Method
from quality_models import LATENT_SHAPE

if TYPE_CHECKING:  # imported at run time, once ComfyUI and the pack are on sys.path
    from fewstep.tuner import TuneResult
    from fewstep.tuner_learn import LearnResult

log = logging.getLogger("quality")


@dataclass
class Tuning:
    """One tuning run of the schedule tuner (objective: mean per-probe RMS at 0)."""

    budget: int
    solver: str
    result: TuneResult  # its output string, objectives and cost


@dataclass
class Learning:
    """One fit of the tuner's ``learn`` from a tuned schedule (objective: the same, on its probes and held out)."""

    budget: int
    mode: str  # fewstep.tuner_learn.LEARN_WEIGHTS or LEARN_MODEL_TIME
    start: str  # the tuning run (its solver input) whose schedule the fit started from
    probes: int  # fitted on this many noises, judged on as many others
    result: "LearnResult"



def tuned_methods(harness: Harness, config: Config, model_key: str, with_denoiser=None, probes: int | None = None,
                  ceilings=None, learn_probes: int | None = None
                  ) -> tuple[list[Method], list[Tuning], list[Learning], list]:
    """Tune a schedule per budget and solver on probe noises (not the evaluation noises), then make each a
    method whose sigmas come from Few-Step Sigmas' `params` input, as a user would paste them; at the learn
    budgets, the tuner's `learn` from the best of them (``learned_fits``; a row per mode its held-out check
    keeps, through Few-Step DPM++ Sampler's `params`); and, at the ceiling budgets, the long generic search's
    schedule (``quality_ceiling``) on the same probes and reference, read from ``ceilings`` (a CeilingCache)
    when it holds this search. ``with_denoiser(noise, work)`` runs ``work(denoiser, x_start)`` on the model
    (default: the analytic one). Returns (methods, tunings, learned fits, ceilings)."""
    from quality_ceiling import ceiling_key, ceiling_search

    from fewstep.tuner import compute_reference, tune

    with_denoiser = with_denoiser or harness.analytic_denoiser
    probes = probes or config.tune_probes
    learn_probes = max(learn_probes or probes, probes)
    larger = {budget: (max(count, probes), runs) for budget, count, runs in config.learn_larger}
    table = harness.tuning_table()
    methods, tunings, learnings, found = [], [], [], []
    for budget in config.budgets:
        generator = torch.Generator().manual_seed(TUNE_SEED + budget)
        noise = torch.randn((probes, *LATENT_SHAPE), generator=generator)
        key = ceiling_key(model_key, budget, probes, TUNE_SEED + budget)
        wanted = budget in config.ceiling_budgets and config.ceiling_evaluations > 0
        cached = ceilings.get(key) if (wanted and ceilings is not None) else None
        solvers = config.tune_solvers if config.tuned else ()
        learning = config.tuned and budget in config.learn_budgets and bool(config.learn_modes)
        fit_probes, fit_config = learn_probes, config
        if budget in larger:
            fit_probes, runs = larger[budget]
            scale = runs / config.learn_runs if config.learn_runs else 1.0
            fit_config = replace(config, learn_runs=runs, learn_seconds=config.learn_seconds * scale)
        if learning:  # the fit's extra probes, then its held-out noises, after the tuning probes
            more = [torch.randn((count, *LATENT_SHAPE), generator=torch.Generator().manual_seed(seed + budget))
                    for count, seed in ((fit_probes - probes, LEARN_SEED), (fit_probes, HELD_OUT_SEED))]
            noise = torch.cat([noise, *more])

        def work(denoiser, x_start, budget=budget, cached=cached, wanted=wanted, solvers=solvers,
                 learning=learning, fit_probes=fit_probes, fit_config=fit_config):
            run = harness.tuning_run(denoiser, x_start[:probes], table)
            reference = compute_reference(run, table)
            results = [(solver, tune(run, table, budget, solver, time_budget=config.tune_seconds,
                                     max_candidates=candidates(config, budget), reference=reference))
                       for solver in solvers]
            ceiling = cached
            if wanted and ceiling is None:
                ceiling = ceiling_search(run, table, budget, reference, config.ceiling_evaluations)
            fits = []
            if learning and results:
                start = min(results, key=lambda found: found[1].objective)
                fits = learned_fits(harness, fit_config, denoiser, x_start[:fit_probes], x_start[fit_probes:], table,
                                    start)
            return results, ceiling, fits

        if not solvers and not wanted:
            continue
        results, ceiling, fits = with_denoiser(noise, work)
        for solver, result in results:
            sigmas = harness.pack_sigmas("custom", params=result.text)
            if not torch.equal(sigmas, result.sigmas.float()):
                raise AssertionError(f"Few-Step Sigmas does not reproduce the tuned schedule {result.text}")
            tunings.append(Tuning(budget, solver, result))
            log.info("%s: tuned NFE %d %s: %.4f -> %.4f in %.1f s (%d schedules, %s)", model_key, budget, solver,
                     result.start_objective, result.objective, result.seconds, result.candidates,
                     result.stopped_by)
            method = harness.params_method(f"FewStep tuned ({solver})", result.text, budget)
            method.family = f"FewStep tuned ({solver})"
            methods.append(method)
        for fit in fits:
            learnings.append(Learning(budget, fit.mode, fit.start, fit_probes, fit.result))
            r = fit.result
            log.info("%s: learned NFE %d %s from %s: probes %.4f -> %.4f, held out %.4f -> %.4f (%d runs, %.0f s)"
                     " %s; fit started from %s", model_key, budget, fit.mode, fit.start, *r.tuning, *r.held_out, r.runs,
                     r.seconds, "kept" if r.learned else "not kept", r.origin)
            if r.learned:
                what = fit.mode.split("+", 1)[1]
                method = harness.params_method(f"FewStep learned ({what})", r.text, budget)
                method.family = f"FewStep learned ({what})"
                methods.append(method)
        if ceiling is not None:
            if ceilings is not None and cached is None:
                ceilings.put(key, ceiling)
            log.info("%s: ceiling NFE %d: recipe %.4f -> %.4f (%d schedules, %.0f s) %s", model_key, budget,
                     ceiling.recipe_objective, ceiling.objective, ceiling.evaluations, ceiling.seconds,
                     ceiling.text)
            method = harness.params_method("FewStep ceiling (Powell)", ceiling.text, budget)
            method.family, method.pack = "ceiling", False
            methods.append(method)
            found.append(ceiling)
    return methods, tunings, learnings, found


def candidates(config: Config, budget: int) -> int | None:
    """The tuning's cap on schedules at ``budget``: tune_candidates, at a trend budget (not ranked) at most
    trend_candidates."""
    if budget in config.ranked_budgets or config.trend_candidates is None:
        return config.tune_candidates
    return config.trend_candidates if config.tune_candidates is None else min(config.tune_candidates,
                                                                                config.trend_candidates)


def learned_fits(harness: Harness, config: Config, denoiser, x_fit: torch.Tensor, x_held_out: torch.Tensor,
                 table: torch.Tensor, start: tuple) -> list[SimpleNamespace]:
    """``fewstep.tuner_learn.learn`` in each of config.learn_modes from ``start`` = (solver, TuneResult) on
    ``x_fit``, judged on ``x_held_out`` (each against its own many-step reference, ``fit_references``):
    SimpleNamespace(mode, start, result) per mode."""
    from fewstep.tuner_learn import learn

    fit_run, fit_reference, held_out_run, held_out_reference = fit_references(harness, denoiser, x_fit, x_held_out,
                                                                              table)
    solver, tuned = start
    return [SimpleNamespace(mode=mode, start=solver,
                            result=learn(fit_run, fit_reference, held_out_run, held_out_reference, table,
                                         tuned.params, mode, time_budget=config.learn_seconds,
                                         max_runs=config.learn_runs))
            for mode in config.learn_modes]


def fit_references(harness: Harness, denoiser, x_fit: torch.Tensor, x_held_out: torch.Tensor, table: torch.Tensor
                   ) -> tuple:
    """(fit run, its reference, held-out run, its reference) of a learned fit, the references as the tuner node's
    fit takes them (``tuner_learn.LEARN_REFERENCE_STEPS`` evaluations, finer than the search's). Each is solved on
    the batch its run samples, so that a class-conditional proxy sees every probe with the class it has in the run
    (ComfyUI gives a smaller batch the first rows of the conditioning)."""
    from fewstep.tuner import compute_reference
    from fewstep.tuner_learn import LEARN_REFERENCE_STEPS

    fit_run = harness.tuning_run(denoiser, x_fit, table, learned=True)
    held_out_run = harness.tuning_run(denoiser, x_held_out, table, learned=True)
    return (fit_run, compute_reference(fit_run, table, LEARN_REFERENCE_STEPS), held_out_run,
            compute_reference(held_out_run, table, LEARN_REFERENCE_STEPS))
