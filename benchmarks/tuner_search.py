"""How fast the schedule tuner's search pays off: the Gauss-Newton search against the old compass search.

For every analytic model of the quality benchmark (``benchmarks/quality_models.py``, or an older
checkout's ``benchmarks/quality.py``: ``MODELS`` where it has them, else its Gaussian mixture), every
solver the tuner offers and NFE 5, 6 and 8, both searches tune the same schedule on the same probe
noises against the same reference (computed once per model and reused for every solver and NFE, as the
node does) with the tuner's objective (distance of x_N to the 40-step reference at sigma 0, mean
per-probe RMS). The old search runs as it did (the paper's early stop only); the new one as the node runs
it, choosing the end (``tune(end="auto")``). Row ``auto`` is the node's default, ``solver="auto"``: its start
is the recipe with the recipe's solver, its target 90 % of what the best of the old search's converged
named-solver rows removes, and beside it the *ceiling*: the best objective of the new search run to
convergence for every solver option ``auto`` screens and both ends (``--no-ceiling``: skipped).
Reported: the objective after 10, 30 and 100
candidates and at convergence, the Frechet distance of the schedule held at those points (samples from
other noises against the model's exact mean and covariance, as in the quality benchmark), and
candidates-to-90 %: the first candidate count at which a search has removed 90 % of what the old
search removes at convergence. The old search is the tuner's own ``method="pattern"`` (the code of
versions up to 0.5, unchanged); the searches are deterministic, so the schedule held after c
candidates is the result of the same search capped at c.

    python benchmarks/tuner_search.py                 # all models (analytic and trained), writes docs/tuner_search.md
    python benchmarks/tuner_search.py --no-trained    # the analytic models only (no ComfyUI needed)
    python benchmarks/tuner_search.py --no-analytic --no-ceiling   # the trained ones: docs/tuner_search_trained.md
    python benchmarks/tuner_search.py --models anisotropic --solvers dpmpp_2m --no-docs
    python benchmarks/tuner_search.py --probes 64 --fd-samples 1024
    python benchmarks/tuner_search.py --model-seed 1 --fd-samples 0   # held-out models: docs/tuner_search_seed1.md
    python benchmarks/tuner_search.py --quality ../other/benchmarks/quality_models.py   # another checkout's models
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # as a script; under pytest ComfyUI comes first (its `nodes`, not the pack's)
    sys.path.insert(0, str(REPO))

from tuner_search_report import (  # noqa: E402
    CHECKPOINTS,
    SHARE,
    TRAINED_PROBES,
    best_after,
    candidates_to,
    line,
    markdown,
)

from fewstep.params import ENDS, ScheduleParams, format_params, rounded  # noqa: E402
from fewstep.plan import params_solver  # noqa: E402
from fewstep.recipes import recipe_for_step_count  # noqa: E402
from fewstep.schedule import standard_sigma_table  # noqa: E402
from fewstep.search_gauss_newton import gauss_newton_search  # noqa: E402
from fewstep.solvers import SCHEDULE_SOLVERS  # noqa: E402
from fewstep.tuner import (  # noqa: E402
    AUTO,
    compute_reference,
    denoiser_run,
    solver_configs,
    solver_label,
    tune,
    with_solver,
)
from fewstep.tuner_objective import SearchContext  # noqa: E402

BUDGETS = (5, 6, 8)
OLD_CAP = 20000  # candidates: far above what the compass search needs to converge here (at most ~4000)
NEW_CAP = 1000
PROBE_SEED = 7000  # as the quality benchmark's tuning probes
FD_SEED = 1000


def load_quality(path: Path = REPO / "benchmarks" / "quality_models.py"):
    spec = importlib.util.spec_from_file_location("fewstep_bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def analytic_models(quality, seed: int = 0) -> dict[str, tuple[str, object]]:
    """name -> (description, model) for every analytic model of the quality benchmark, drawn with ``seed``
    (0: the quality benchmark's own; the search's constants were chosen on those, so other seeds are held out)."""
    if hasattr(quality, "MODELS"):
        return {name: (description, make(seed)) for name, (description, make) in quality.MODELS.items()}
    return {"anisotropic": ("mixture of 6 Gaussians with anisotropic diagonal covariances",
                            quality.GaussianMixture.random(6, seed=seed))}


def exact_denoiser(model):
    def denoiser(x, sigma):
        flat = x.reshape(x.shape[0], -1).double()
        return model.denoise(flat, sigma.double().reshape(-1).expand(x.shape[0])).reshape(x.shape).float()
    return denoiser


def noise(count: int, seed: int, shape, sigma_max: float) -> torch.Tensor:
    x = torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))
    return x * math.sqrt(1.0 + sigma_max ** 2)  # EPS noise scaling at sigma_max


class FrechetProbe:
    """Frechet distance of a schedule's samples (x_N from ``samples`` noises) to the model's exact moments."""

    def __init__(self, quality, model, table, samples: int, shape, solver_cache: dict):
        self.quality, self.table = quality, table
        self.run = denoiser_run(exact_denoiser(model), noise(samples, FD_SEED, shape, float(table[-1])), table)
        covariance = model.covariance()
        values, vectors = torch.linalg.eigh(covariance)
        self.mean = model.mean()
        self.sqrt = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
        self.trace = float(covariance.trace())
        self.cache = solver_cache

    def __call__(self, sigmas: torch.Tensor, solver: str) -> float:
        key = (tuple(sigmas.tolist()), solver)
        if key not in self.cache:
            x = self.run(sigmas, solver)
            self.cache[key] = self.quality.frechet_distance(x, self.mean, self.sqrt, self.trace)
        return self.cache[key]


def measure(quality, names, solvers, budgets, probes: int, fd_samples: int, shape, log=print, model_seed: int = 0,
            ceiling: bool = True):
    table = standard_sigma_table()
    rows = []
    for name, (description, model) in analytic_models(quality, model_seed).items():
        if names and name not in names:
            continue
        x = noise(probes, PROBE_SEED, shape, float(table[-1]))
        run = denoiser_run(exact_denoiser(model), x, table)
        frechet = FrechetProbe(quality, model, table, fd_samples, shape, {}) if fd_samples else None
        rows += measure_model(name, run, table, solvers, budgets, frechet, ceiling, log)
    return rows


def measure_trained(names, solvers, budgets, probes: int, log=print, ceiling: bool = True):
    """The same rows on the trained proxies (``benchmarks/proxies``, each at every guidance scale it lists), each
    sampled inside one ComfyUI sample_custom call as the tuner node samples (``TrainedTarget.with_denoiser``: conds,
    CFG and noise scaling by ComfyUI), on the model's own sigma table; no FD (these have no exact moments)."""
    from quality_methods import load_comfyui
    from quality_trained import TrainedTarget, trained_models

    comfy = load_comfyui()
    rows = []
    from proxies.models import PROXIES

    for name, model in trained_models().items():
        if (names and name not in names) or PROXIES[model.proxy].prediction == "flow":
            continue  # the flow proxy steps in the const form on its flow table: benchmarks/quality_flow.py
        target = TrainedTarget(comfy, model)
        table = target.ms.sigmas.double().cpu()
        x = torch.randn((probes, *target.latent_shape), generator=torch.Generator().manual_seed(PROBE_SEED))

        def work(denoiser, x_start, name=name, table=table):
            return measure_model(name, denoiser_run(denoiser, x_start, table), table, solvers, budgets, None, ceiling,
                                 log)

        rows += target.with_denoiser(x, work)
    return rows


def measure_model(name, run, table, solvers, budgets, frechet, ceiling: bool, log=print) -> list[dict]:
    """The rows of one model: every solver and budget, the old and the new search from the same reference."""
    rows = []
    calls = [0]

    def counted(sigmas, solver, run=run):
        calls[0] += len(sigmas) - 1
        return run(sigmas, solver)

    reference = compute_reference(counted, table)  # once per model: every solver and NFE reuses it
    old_runs: dict[tuple[str, int], dict] = {}

    def search(method: str, solver: str, budget: int, cap: int) -> dict:
        """One search as the row reports it: the old one as it was (the early stop only), the new one as the
        node runs it (the end chosen); its objective at the checkpoints and (with FD) the schedules' FD."""
        options = dict(end="index") if method == "pattern" else {}
        began = time.monotonic()
        result = tune(counted, table, budget, solver, time_budget=math.inf, max_candidates=cap, method=method,
                      reference=reference, **options)
        seconds = time.monotonic() - began
        points = {c: best_after(result.history, c) for c in CHECKPOINTS}
        fd = {}
        if frechet is not None:
            for c in CHECKPOINTS:
                if c >= result.candidates:
                    fd[c] = None
                    continue
                capped = tune(counted, table, budget, solver, time_budget=math.inf, max_candidates=c,
                              method=method, reference=reference, **options)
                assert capped.objective == points[c], "the search is not deterministic"
                fd[c] = frechet(capped.sigmas, params_solver(capped.params))
            fd["end"] = frechet(result.sigmas, params_solver(result.params))
            fd["start"] = frechet(start_sigmas(budget, table), result_start_solver(solver, budget))
        return dict(result=result, points=points, fd=fd, seconds=seconds)

    def old(solver: str, budget: int) -> dict:
        if (solver, budget) not in old_runs:
            old_runs[solver, budget] = search("pattern", solver, budget, OLD_CAP)
        return old_runs[solver, budget]

    for solver in solvers:
        for budget in budgets:
            row = {"model": name, "solver": solver, "nfe": budget}
            row["gauss_newton"] = search("gauss_newton", solver, budget, NEW_CAP)
            new = row["gauss_newton"]["result"]
            if solver == AUTO:  # the best converged old search over the named solvers, from the recipe's start
                best = min((old(s, budget) for s in SCHEDULE_SOLVERS), key=lambda e: e["result"].objective)
                row["pattern"] = dict(best, points={c: None for c in CHECKPOINTS}, fd={}, to90=None)
                row["old_solver"] = best["result"].params.solver
                if ceiling:
                    row["ceiling"] = ceiling_search(counted, table, budget, reference)
            else:
                row["pattern"] = dict(old(solver, budget))
                assert row["pattern"]["result"].start_objective == new.start_objective
            row["start"] = new.start_objective
            row["old_objective"] = row["pattern"]["result"].objective
            target = row["start"] - SHARE * (row["start"] - row["old_objective"])
            row["target"] = target
            for method in ("pattern", "gauss_newton"):
                if solver != AUTO or method == "gauss_newton":
                    row[method]["to90"] = candidates_to(row[method]["result"].history, target)
            rows.append(row)
            log(line(row))
    log(f"{name}: one reference (40 evaluations) for {len(solvers) * len(budgets)} tunings; "
        f"{calls[0]} model evaluations in all")
    return rows


def ceiling_search(run, table, budget: int, reference) -> dict:
    """The Gauss-Newton search run to convergence (at most NEW_CAP candidates) from the recipe for every solver
    option ``auto`` screens and both ends, each on its own: (best objective, its params text, the objective per
    option)."""
    values = {}
    best = None
    for solver, variant, order in solver_configs(AUTO, budget):
        for end in ENDS:
            start = replace(with_solver(ScheduleParams.from_recipe(recipe_for_step_count(budget)), solver, variant,
                                        order), end=end)
            context = SearchContext(run, table, budget, reference, math.inf, NEW_CAP, None, None, time.monotonic,
                                    time.monotonic())
            gauss_newton_search(context, rounded(start), True)
            value, params, _ = context.best_of()
            values[solver_label(params) + f" end={end}"] = value
            if best is None or value < best[0]:
                best = (value, format_params(params))
    return dict(objective=best[0], text=best[1], values=values)


def result_start_solver(solver: str, budget: int) -> str:
    """The solver the start of a row runs with: the named one, or with ``auto`` the recipe's."""
    return recipe_for_step_count(budget).solver if solver == AUTO else solver


def start_sigmas(budget: int, table) -> torch.Tensor:
    """The recipe both searches start from (``tune``'s default start)."""
    return ScheduleParams.from_recipe(recipe_for_step_count(budget)).sigmas(table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="model names (default: all)")
    parser.add_argument("--solvers", nargs="*", default=[AUTO, *SCHEDULE_SOLVERS])
    parser.add_argument("--nfe", nargs="*", type=int, default=list(BUDGETS))
    parser.add_argument("--probes", type=int, default=64)
    parser.add_argument("--shape", nargs=3, type=int, default=(4, 8, 8))
    parser.add_argument("--fd-samples", type=int, default=1024, help="0: no FD")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", type=Path, default=REPO / "benchmarks" / "quality_models.py",
                        help="the quality benchmark's models module whose analytic models to use (default: this "
                             "checkout's; an older checkout's benchmarks/quality.py holds them too)")
    parser.add_argument("--model-seed", type=int, default=0,
                        help="draw the analytic models with this seed (default 0, the quality benchmark's; "
                             "another seed writes docs/tuner_search_seed<N>.md)")
    parser.add_argument("--no-ceiling", action="store_true", help="auto rows without the ceiling searches")
    parser.add_argument("--no-trained", action="store_true",
                        help="the analytic models only (no ComfyUI needed), not the trained proxies")
    parser.add_argument("--no-analytic", action="store_true",
                        help="the trained proxies only; writes docs/tuner_search_trained.md")
    parser.add_argument("--trained-probes", type=int, default=TRAINED_PROBES,
                        help=f"probe noises on the trained proxies (default {TRAINED_PROBES}, as the quality "
                             "benchmark tunes them)")
    parser.add_argument("--no-docs", action="store_true", help="print only, do not write docs/tuner_search.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.monotonic()
    if args.no_analytic and (args.no_trained or args.model_seed):
        parser.error("--no-analytic leaves nothing to measure with --no-trained or --model-seed")
    rows = [] if args.no_analytic else measure(load_quality(args.quality), args.models, args.solvers, args.nfe,
                                               args.probes, args.fd_samples, tuple(args.shape),
                                               model_seed=args.model_seed, ceiling=not args.no_ceiling)
    if not args.no_trained and args.model_seed == 0:
        rows += measure_trained(args.models, args.solvers, args.nfe, args.trained_probes, ceiling=not args.no_ceiling)
    text = markdown(rows, args, time.monotonic() - began)
    print(text)
    if not args.no_docs:
        name = ("tuner_search_trained.md" if args.no_analytic else
                "tuner_search.md" if args.model_seed == 0 else f"tuner_search_seed{args.model_seed}.md")
        (REPO / "docs" / name).write_text(text)


if __name__ == "__main__":
    main()
