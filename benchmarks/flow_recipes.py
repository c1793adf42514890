"""Derive the flow recipes (fewstep/recipes.py): the pack's tuner on the flow proxies, one schedule per family and NFE.

Families: "SD3" (the three analytic models of ``quality_flow`` under SD3's ModelSamplingDiscreteFlow, shift 3.0, and
the trained ``photo_flow``, also shift 3.0) and "Flux" (the three analytic models under ModelSamplingFlux at
1024 x 1024, shift 1.15). For each family and NFE the tuner (``fewstep.tuner.tune``: solver auto, end auto, the
Gauss-Newton search, as the Few-Step Schedule Tuner node runs it, here with up to 600 candidates) searches one schedule
for all the family's models at once: its run concatenates each model's probes (the quality benchmark's tuning probes,
seed 7000 + NFE: 128 on an analytic model, 16 on photo_flow, disjoint from every evaluation noise) and references,
each model's outputs and reference scaled so that the objective is the mean over models of the distance relative to
that model's recipe start. The tuner also runs on each model alone. Every schedule so found is then scored on every
model of the family (relative to its start), and the one with the least mean is the family's recipe for that NFE.
Printed per NFE: each candidate's mean and per-model relative distances and its params text (the winner starred).

    COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python benchmarks/flow_recipes.py [--budgets 5,6,8] [--candidates 600]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from quality_flow import SAMPLINGS, TRAINED, FlowHarness, FlowMixture, FlowTrainedTarget, flow_model_sampling
from quality_methods import TUNE_SEED, load_comfyui
from quality_models import LATENT_SHAPE, MODELS
from quality_trained import trained_models

FAMILIES = {"sd3": [*(f"{m}_sd3" for m in MODELS), *TRAINED], "flux": [f"{m}_flux" for m in MODELS]}
PROBES = {"analytic": 128, "trained": 16}


def tune_family(comfy, family: str, budget: int, candidates: int, seconds: float, log=print):
    """The schedules of one family at one NFE: the joint tuning and each model's own; returns the one with the least
    mean distance relative to the start over the family's models, and every candidate's per-model scores."""
    from fewstep.params import ScheduleParams
    from fewstep.plan import params_solver
    from fewstep.recipes import recipe_for_step_count
    from fewstep.tuner import compute_reference, tune
    from fewstep.tuner_objective import distance

    flow_comfy = SimpleNamespace(**{**vars(comfy), "extras": {}})
    harness = FlowHarness(flow_comfy, FlowMixture(MODELS["anisotropic"][1](0)), flow_model_sampling(family))
    table = harness.tuning_table()
    start = ScheduleParams.from_recipe(recipe_for_step_count(budget))
    start_sigmas, start_solver = start.sigmas(table), params_solver(start)
    parts = []  # (name, run, reference)

    def add(name, run):
        parts.append((name, run, compute_reference(run, table)))

    for name in FAMILIES[family]:
        if name in TRAINED:
            continue
        harness.use(FlowMixture(MODELS[name.rsplit("_", 1)[0]][1](0)))
        generator = torch.Generator().manual_seed(TUNE_SEED + budget)
        noise = torch.randn((PROBES["analytic"], *LATENT_SHAPE), generator=generator)
        harness.analytic_denoiser(noise, lambda d, x, name=name: add(name, harness.tuning_run(d, x, table)))

    def joint(extra=()):
        models = parts + list(extra)
        weights = []
        for name, run, reference in models:
            base = distance(run(start_sigmas, start_solver), reference)
            weights.append(sum(len(r) for _, _, r in models) / (len(reference) * len(models) * base))

        def run_joint(sigmas, solver):
            return torch.cat([run(sigmas, solver) * w for (_, run, _), w in zip(models, weights)])

        reference = torch.cat([r * w for (_, _, r), w in zip(models, weights)])
        began = time.monotonic()
        found = {"joint": tune(run_joint, table, budget, "auto", time_budget=seconds, max_candidates=candidates,
                               reference=reference)}
        log(f"{family} NFE {budget}: joint tuning {found['joint'].objective:.4f} of the start, "
            f"{found['joint'].candidates} schedules, {time.monotonic() - began:.0f} s, {found['joint'].stopped_by}")
        for name, run, ref in models:
            found[name] = tune(run, table, budget, "auto", time_budget=seconds, max_candidates=candidates,
                               reference=ref)
        # every schedule found, on every model of the family: the one with the least mean relative distance wins
        scores = {key: [distance(run(r.sigmas, params_solver(r.params)), ref)
                        / distance(run(start_sigmas, start_solver), ref) for _, run, ref in models]
                  for key, r in found.items()}
        best = min(scores, key=lambda key: sum(scores[key]) / len(models))
        for key, values in scores.items():
            log(f"  {'*' if key == best else ' '} {key:<18} mean {sum(values) / len(values):.4f} of the start: "
                + ", ".join(f"{name} {v:.3f}" for (name, _, _), v in zip(models, values)) + f"  {found[key].text}")
        return found[best], scores

    trained = [name for name in FAMILIES[family] if name in TRAINED]
    if not trained:
        return joint()
    target = FlowTrainedTarget(comfy, trained_models()[trained[0]])
    generator = torch.Generator().manual_seed(TUNE_SEED + budget)
    noise = torch.randn((PROBES["trained"], *target.latent_shape), generator=generator)

    def work(denoiser, x_start):
        run = harness.tuning_run(denoiser, x_start, table)
        return joint([(trained[0], run, compute_reference(run, table))])

    return target.with_denoiser(noise, work)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="5,6,8")
    parser.add_argument("--families", default=",".join(SAMPLINGS))
    parser.add_argument("--candidates", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=600.0)
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    comfy = load_comfyui()
    for family in options.families.split(","):
        for budget in (int(b) for b in options.budgets.split(",")):
            tune_family(comfy, family, budget, options.candidates, options.seconds)


if __name__ == "__main__":
    main()
