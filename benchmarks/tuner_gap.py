"""Where the schedule tuner falls short of the quality benchmark's ceiling, on a trained proxy, in about a minute.

For each trained model and NFE it rebuilds exactly what ``make bench-quality`` tunes on (16 probe noises, seed
7000 + NFE, as its Config and TUNE_SEED say; their 40-step DPM++2M reference through ComfyUI's sample_custom) and
prints:

- the tuner as the node runs it (``solver=auto``, ``end=auto``, ``--cap`` candidates, default the node's 300) and
  its share of the ceiling's gain over the recipe, the ceiling read from docs/quality_ceiling.json (the long
  Powell + differential-evolution search bench-quality keeps there; this script never runs it);
- with ``--per-choice``: the Gauss-Newton search alone, from the recipe, for the ceiling's own solver and end, run to
  convergence (``--cap`` candidates at most): can a local search reach the ceiling's basin from the recipe at all?
- with ``--line``: the objective along the straight line (in the search's coordinates: log sigma_end, log time_rho,
  the ramp's logits) from the tuned schedule (t = 0) to the ceiling's (t = 1), re-solved with the ceiling's solver
  and end: bumps along it mean the local search converges in another basin, not that it stopped early.

    python benchmarks/tuner_gap.py                                   # photo_eps and photo_v_zsnr, NFE 5 and 8
    python benchmarks/tuner_gap.py --models photo_eps --nfe 8 --per-choice --line
    python benchmarks/tuner_gap.py --cap 1000                        # does a bigger candidate cap help?
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/tuner_gap.py     # on another ComfyUI
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

CEILINGS = REPO / "docs" / "quality_ceiling.json"
LINE_POINTS = [i / 10 for i in range(-2, 13)]


def probes_and_seed(nfe: int) -> tuple[int, int]:
    """The quality benchmark's tuning probes on a trained model and their seed for this NFE."""
    from quality_methods import TUNE_SEED, Config

    return Config().trained_tune_probes, TUNE_SEED + nfe


def ceiling_for(model: str, nfe: int) -> dict:
    from quality_ceiling import CeilingCache, ceiling_key

    key = ceiling_key(model, nfe, *probes_and_seed(nfe))
    found = CeilingCache(CEILINGS).entries.get(key)
    if found is None:
        raise SystemExit(f"no ceiling kept for {key!r} in {CEILINGS}: run `make bench-quality` (it searches and "
                         "keeps it)")
    return found


def coordinates(params, end) -> list[float]:
    """The Gauss-Newton search's coordinates of a schedule (the end at sigma_min just below its continuous range)."""
    from fewstep.tuner_objective import logits_from_ramp

    at_minimum = params.end_index == params.base_steps - 1
    log_end = end.bounds[0] - 0.05 if at_minimum else end.log_sigma(params.end_index, params.base_rho)
    logits = [0.0] * (params.steps - 1) if params.ramp is None else logits_from_ramp(params.ramp)  # None: even steps
    return [log_end, math.log(params.time_rho), *logits]


def schedule_at(z: list[float], like, end):
    from fewstep.params import rounded
    from fewstep.tuner_objective import ramp_from_logits

    if z[0] < end.bounds[0]:
        index, rho = like.base_steps - 1, like.base_rho
    else:
        index, rho = end.of(z[0], min(like.end_index, like.base_steps - 2))
    return rounded(replace(like, end_index=index, base_rho=rho, time_rho=math.exp(z[1]),
                           ramp=ramp_from_logits(z[2:])))


def gap(comfy, model: str, nfe: int, args) -> dict:
    """Print the gap for one model and NFE; returns {"tuned": TuneResult, "ceiling": the kept entry, and with the
    options "per_choice": (objective at the start, at the end, candidates), "line": objectives at LINE_POINTS}."""
    from quality_trained import TrainedTarget, trained_models

    from fewstep.params import ScheduleParams, parse_params, rounded
    from fewstep.recipes import recipe_for_step_count
    from fewstep.search_gauss_newton import _EndPoint, gauss_newton_search
    from fewstep.tuner import AUTO, compute_reference, denoiser_run, solver_label, tune
    from fewstep.tuner_objective import SearchContext

    ceiling = ceiling_for(model, nfe)
    target = TrainedTarget(comfy, trained_models()[model])
    table = target.ms.sigmas.double().cpu()
    probes, seed = probes_and_seed(nfe)
    noise = torch.randn((probes, *target.latent_shape), generator=torch.Generator().manual_seed(seed))
    recipe, best = ceiling["recipe_objective"], ceiling["objective"]

    def share(value: float) -> str:
        return f"{(recipe - value) / (recipe - best):.0%}"

    found = {"ceiling": ceiling}

    def work(denoiser, x_start):
        run = denoiser_run(denoiser, x_start, sigma_table=table)
        reference = compute_reference(run, table)
        began = time.monotonic()
        tuned = tune(run, table, nfe, AUTO, time_budget=1e9, max_candidates=args.cap, reference=reference)
        print(f"{model} NFE {nfe}: recipe {recipe:.4f}, tuned {tuned.objective:.4f} ({tuned.candidates} candidates, "
              f"{tuned.stopped_by}, {time.monotonic() - began:.0f} s), ceiling {best:.4f}: "
              f"share {share(tuned.objective)}")
        found["tuned"] = tuned
        print(f"  tuned:   {tuned.text}\n  ceiling: {ceiling['text']}")
        ranked = sorted(tuned.solvers.items(), key=lambda item: item[1])
        print("  best seen per solver option: " + ", ".join(f"{label} {value:.4f}" for label, value in ranked))
        print("  best seen per end: " + ", ".join(f"{end} {value:.4f}" for end, value in tuned.ends.items()))
        goal = parse_params(ceiling["text"])
        end = _EndPoint(goal.base_steps)

        def context():
            return SearchContext(run, table, nfe, reference, 1e9, args.cap, None, None, time.monotonic,
                                 time.monotonic(), None)

        if args.per_choice:
            start = replace(ScheduleParams.from_recipe(recipe_for_step_count(nfe)), steps=nfe, solver=goal.solver,
                            variant=goal.variant, order=goal.order, end=goal.end, ramp=None)
            searched = context()
            first = searched.evaluate(rounded(start))[0]
            gauss_newton_search(searched, rounded(start), True)
            value, local = searched.best_of()[:2]
            found["per_choice"] = (first, value, len(searched.seen))
            print(f"  Gauss-Newton alone, {solver_label(goal)} end={goal.end} from the recipe: {first:.4f} -> "
                  f"{value:.4f} ({len(searched.seen)} candidates, {searched.stopped_by}; share {share(value)}): "
                  f"end_index {local.end_index}, base_rho {local.base_rho:g}, time_rho {local.time_rho:g}")
        if args.line:
            origin = replace(tuned.params, solver=goal.solver, variant=goal.variant, order=goal.order, end=goal.end)
            a, b = coordinates(origin, end), coordinates(goal, end)
            line = context()
            values = [line.evaluate(schedule_at([p + t * (q - p) for p, q in zip(a, b)], goal, end))[0]
                      for t in LINE_POINTS]
            found["line"] = values
            print(f"  along the line tuned (t=0, re-solved with {solver_label(goal)} end={goal.end}) -> ceiling (t=1): "
                  + ", ".join(f"{t:g}: {v:.4f}" for t, v in zip(LINE_POINTS, values)))

    target.with_denoiser(noise, work)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["photo_eps", "photo_v_zsnr"],
                        help="trained benchmark models (quality_trained.trained_models keys)")
    parser.add_argument("--nfe", nargs="+", type=int, default=[5, 8])
    parser.add_argument("--cap", type=int, default=None, help="candidates per search (default: the node's cap)")
    parser.add_argument("--per-choice", action="store_true", help="the local search alone for the ceiling's choice")
    parser.add_argument("--line", action="store_true", help="the objective between the tuned and the ceiling's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from quality_methods import load_comfyui

    comfy = load_comfyui()
    if args.cap is None:
        args.cap = comfy.pack.nodes.tuning.MAX_CANDIDATES
    print(f"ComfyUI {comfy.label}; {args.threads} torch thread(s); candidate cap {args.cap}")
    for model in args.models:
        for nfe in args.nfe:
            gap(comfy, model, nfe, args)


if __name__ == "__main__":
    main()
