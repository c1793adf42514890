"""Quality benchmark on flow-matching models: the recipes and the tuner against ComfyUI's samplers, in the CONST form.

ComfyUI samples flow models (SD3 / SD3.5, Flux, ...) with the CONST prediction kind, x = (1 - s) x0 + s eps for
s = sigma in (0, 1], on a shifted time axis. The models here:

- the three analytic data sets of ``quality_models`` (anisotropic, clustered, spheres) in that form: an eps-form
  exact denoiser D_eps(x, sigma) gives the CONST one as D(x, s) = D_eps(x / (1 - s), s / (1 - s)) (at s = 1, x is
  pure noise and D = E[x0]); each under SD3's model sampling (ModelSamplingDiscreteFlow, shift 3.0) and Flux's at
  1024 x 1024 (ModelSamplingFlux with the shift ComfyUI's ModelSamplingFlux node computes there: 1.15);
- ``photo_flow``, the trained rectified-flow proxy (``benchmarks/proxies``) on SD3's model sampling.

Everything else is the quality benchmark's (``quality_ranking``): every deterministic core sampler x scheduler pair
on the same model sampling at 5, 6 and 8 evaluations (10 and 12: the trend), the pack's rows through its nodes, the
tuner's schedule per budget (solver auto), FD and RMS with paired 95 % intervals, and the quality-equivalent
speed-up, here against Euler with ComfyUI's ``simple`` scheduler (the default of SD3 and Flux workflows). AYS and
GITS are left out: their sigma lists are for eps-form models (sigma up to 14.6), not for the flow axis.
The tuner runs as on any model (``fewstep.tuner``) on the model's own 1000-entry sigma table (the unshifted time
t = (i + 1) / 1000 through the model's sigma(t)), its solvers stepping in the const form.

    COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python benchmarks/quality_flow.py   # make bench-flow: docs/quality_flow.md
    ... --models anisotropic_sd3,photo_flow --seeds 2 --no-docs             # a subset
    ... --quick                                                             # the smoke test

Needs a ComfyUI with flow model sampling (0.3.64); PINNED (March 2024) has none, and the script says so.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import replace
from types import SimpleNamespace

import torch
from quality_methods import Config, Harness, load_comfyui, plan
from quality_models import MODELS
from quality_ranking import Results, Suite, machine_description, score_model, trained_tuning
from quality_scores import AnalyticScorer, TrainedScorer
from quality_trained import TrainedTarget, torch_threads, trained_models
from quality_tuning import tuned_methods

log = logging.getLogger("quality")

FLUX_SIZE = (1024, 1024)
SAMPLINGS = {  # name -> what it is
    "sd3": "SD3 / SD3.5: ModelSamplingDiscreteFlow, shift 3.0",
    "flux": "Flux at 1024 x 1024: ModelSamplingFlux, shift 1.15 (the ModelSamplingFlux node: base 0.5, max 1.15)",
}
TRAINED = {"photo_flow": "sd3"}  # the flow proxies and the model sampling they were trained for
FLOW_MODELS = [f"{base}_{sampling}" for sampling in SAMPLINGS for base in MODELS] + list(TRAINED)
ONE = 1.0 - 1e-7  # s above this is read as 1 (x / (1 - s) overflows the eps form's scale there)

# 3 seeds x 512 samples (quality.md has 1024): seven models, each against ~250 core pairs per budget, in about 25
# minutes on one core; photo_flow 2 x 256 (a network batch costs about a hundred analytic evaluations).
FLOW = Config(
    models=tuple(FLOW_MODELS), seeds=3, samples=512, tune_solvers=("auto",), ceiling_evaluations=0,
    sweep=("euler", "simple"), sweep_label="Euler simple", baseline=("euler", "simple", 20),
    trained_seeds=2, trained_samples=256, learn_budgets=(),  # learned rows: not measured on flow models yet
    trend_candidates=None,  # the trend budgets search as far as the ranked ones, as docs/quality_flow.md was made
)
QUICK = replace(FLOW, budgets=(5, 6, 8), seeds=1, samples=256, models=("anisotropic_sd3", "clustered_flux"),
                samplers=("euler", "heun", "dpmpp_2m"), schedulers=("simple", "beta", "karras"), tune_probes=32,
                tune_candidates=40, speedup=False)


def flux_shift(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """The shift ComfyUI's ModelSamplingFlux node computes for an image size (linear in the latent's tokens)."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return width * height / (8 * 8 * 2 * 2) * slope + base_shift - slope * 256


def flow_model_sampling(name: str):
    """ComfyUI's model sampling for ``name`` of SAMPLINGS, made as the ModelSamplingSD3 / ModelSamplingFlux nodes
    make it (their class with CONST, then set_parameters)."""
    import comfy.model_sampling as sampling

    if not hasattr(sampling, "CONST"):
        raise RuntimeError("this ComfyUI has no flow model sampling (CONST): run the flow benchmark on ComfyUI 0.3.64 "
                           "or later (COMFYUI_PATH=...)")
    base = sampling.ModelSamplingDiscreteFlow if name == "sd3" else sampling.ModelSamplingFlux

    class ModelSamplingAdvanced(base, sampling.CONST):
        pass

    model_sampling = ModelSamplingAdvanced(None)
    if name == "sd3":
        model_sampling.set_parameters(shift=3.0, multiplier=1000)
    else:
        model_sampling.set_parameters(shift=flux_shift(*FLUX_SIZE))
    return model_sampling


def flow_sigma_table(model_sampling) -> torch.Tensor:
    """The model's 1000-entry sigma table (float64): the pack's ``model_sigma_table`` where the pack has it, else
    the same rule here: entry i is sigma at the unshifted time t = (i + 1) / 1000 (percent_to_sigma(1 - t))."""
    import sys

    pack = next((m for name, m in sys.modules.items() if name.endswith("nodes.comfy_api")
                 and hasattr(m, "model_sigma_table")), None)
    if pack is not None:
        return pack.model_sigma_table(model_sampling)[0].double().cpu()
    t = [(i + 1) / 1000 for i in range(1000)]
    return torch.tensor([float(model_sampling.percent_to_sigma(1.0 - v)) if v < 1.0 else 1.0 for v in t],
                        dtype=torch.float64)


class FlowMixture:
    """An analytic model in the CONST form: the same data, D(x, s) = D_eps(x / (1 - s), s / (1 - s)); E[x0] at s = 1."""

    def __init__(self, mixture):
        self.mixture = mixture

    def __getattr__(self, name):  # mean, covariance, sample, dims: the data's
        return getattr(self.mixture, name)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] for x = (1 - s) x0 + s eps, x (B, D), sigma = s (B,)."""
        s = sigma.clamp(max=ONE)
        out = self.mixture.denoise(x / (1.0 - s)[:, None], s / (1.0 - s))
        return torch.where((sigma >= ONE)[:, None], self.mixture.mean().expand_as(out), out)


class FlowHarness(Harness):
    """The quality harness on a flow model sampling: the tuner reads the model's flow table and steps in const form."""

    def tuning_table(self) -> torch.Tensor:
        return flow_sigma_table(self.ms)

    def tuning_run(self, denoiser, x_start: torch.Tensor, table: torch.Tensor):
        from fewstep.noise_forms import NOISE_FORM_CONST
        from fewstep.sampling import sample
        from fewstep.tuner_objective import as_solver

        def run(sigmas: torch.Tensor, solver) -> torch.Tensor:
            solver = replace(as_solver(solver), noise_form=NOISE_FORM_CONST)
            with torch.no_grad():
                latent = sample(denoiser, x_start, sigmas, disable=True, sigma_table=table, solver=solver)
            # as the tuner node measures it: what ComfyUI hands back, x / (1 - sigma_last) (inverse_noise_scaling)
            return latent if solver.finish != "last_sigma" else latent / (1.0 - float(sigmas[-1]))
        return run


class FlowScorer(AnalyticScorer):
    """The analytic scores on a flow model: ComfyUI hands back x / (1 - s) at a last sigma s > 0
    (inverse_noise_scaling), so the reference state there is scaled the same way for "RMS at sigma end"."""

    def _solve(self, seed: int, key: tuple, sigma_ends: set) -> dict:
        states = super()._solve(seed, key, sigma_ends)  # a new dict of new states each time
        for s in states:
            if 0.0 < s < 1.0:
                states[s] = states[s] / (1.0 - s)
        return states


class FlowTrainedTarget(TrainedTarget):
    """A trained flow proxy whose reference schedule is the tuner's flow reference (``reference_sigmas`` on the
    model's own table): KSampler's Karras schedule from sigma 1 leaves the high-noise end unresolved."""

    def reference_sigmas(self, steps: int) -> torch.Tensor:
        from fewstep.tuner_objective import reference_sigmas

        return reference_sigmas(flow_sigma_table(self.ms), steps)


def run_flow(config: Config = FLOW, comfy: SimpleNamespace | None = None) -> Suite:
    """Plan the methods once per model sampling, then per model tune and score every method (``score_model``)."""
    with torch_threads(config.threads):
        return _run(config, comfy or load_comfyui())


def _run(config: Config, comfy: SimpleNamespace) -> Suite:
    began = time.perf_counter()
    flow_comfy = SimpleNamespace(**{**vars(comfy), "extras": {}})  # no AYS / GITS: eps-form sigma lists
    trained = trained_models()
    machine = machine_description()
    plans: dict[str, tuple[FlowHarness, tuple]] = {}
    models = []
    for name in config.models:
        model_began = time.perf_counter()
        target, model_config = None, config
        if name in TRAINED:
            target = FlowTrainedTarget(comfy, trained[name])
            sampling, mixture = TRAINED[name], FlowMixture(MODELS["anisotropic"][1](config.mixture_seed))
            description = f"trained proxy: rectified flow (v = eps - x0), cfg 1; {SAMPLINGS[sampling]}"
        else:
            base, sampling = name.rsplit("_", 1)
            mixture = FlowMixture(MODELS[base][1](config.mixture_seed))
            description = f"{MODELS[base][0]}, CONST form; {SAMPLINGS[sampling]}"
        if sampling not in plans:
            harness = FlowHarness(flow_comfy, mixture, flow_model_sampling(sampling))
            plans[sampling] = (harness, plan(harness, config))
            log.info("%s: planned %d methods (%.0f s)", sampling, len(plans[sampling][1][0]),
                     time.perf_counter() - began)
        harness, (methods, skipped, unfit) = plans[sampling]
        harness.use(mixture)
        if target is None:
            tuned_rows, tunings, _, _ = tuned_methods(harness, config, name)
            scorer = FlowScorer(harness, config)
        else:
            tuned_rows, tunings, _, _ = tuned_methods(
                harness, trained_tuning(config), name, target.with_denoiser, config.trained_tune_probes)
            model_config = replace(config, trend_core=config.trained_trend_core,
                                   speedup_pairs=config.trained_speedup_pairs)
            scorer = TrainedScorer(target, harness, config)
        results = Results(model_config, comfy.label, [], skipped, unfit, getattr(scorer, "floor", None), math.nan, 0.0,
                          machine, tunings, name, description, target is not None, scorer.seeds, scorer.samples)
        score_model(results, scorer, harness, methods + tuned_rows)
        results.seconds = time.perf_counter() - model_began
        log.info("%s done (%.0f s)", name, results.seconds)
        models.append(results)
    return Suite(config, comfy.label, models, time.perf_counter() - began, machine)


def main(argv=None) -> Suite:
    """The command line: run the flow benchmark, print its tables, write docs/quality_flow.md."""
    from quality_flow_report import write_flow_docs
    from quality_report import print_tables

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few methods, one seed, no docs (the smoke test)")
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(FLOW_MODELS)}")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--trained-samples", type=int)
    parser.add_argument("--mixture-seed", type=int, help="draw the analytic models with another seed (held out)")
    parser.add_argument("--samplers", help="comma-separated core samplers (default: every deterministic one)")
    parser.add_argument("--schedulers", help="comma-separated core schedulers (default: every one)")
    parser.add_argument("--no-tuned", action="store_true")
    parser.add_argument("--no-speedup", action="store_true", help="leave out the speed-up search")
    parser.add_argument("--no-docs", action="store_true")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = QUICK if options.quick else FLOW
    if options.models:
        unknown = [m for m in options.models.split(",") if m not in FLOW_MODELS]
        if unknown:
            parser.error(f"--models: {unknown} not in {FLOW_MODELS}")
        config = replace(config, models=tuple(options.models.split(",")))
    for key, value in (("seeds", options.seeds), ("samples", options.samples),
                       ("trained_samples", options.trained_samples), ("mixture_seed", options.mixture_seed),
                       ("samplers", options.samplers and tuple(options.samplers.split(","))),
                       ("schedulers", options.schedulers and tuple(options.schedulers.split(",")))):
        if value is not None:
            config = replace(config, **{key: value})
    if options.no_tuned:
        config = replace(config, tuned=False)
    if options.no_speedup:
        config = replace(config, speedup=False)
    comfy = load_comfyui()
    import comfy.model_sampling as model_sampling

    if not hasattr(model_sampling, "CONST"):
        parser.exit(2, f"quality_flow: {comfy.label} has no flow model sampling (CONST): run it on ComfyUI 0.3.64 or "
                       "later (COMFYUI_PATH=/path/to/ComfyUI)\n")
    suite = run_flow(config, comfy)
    print_tables(suite)
    if not (options.quick or options.no_docs):
        write_flow_docs(suite, argv)
    return suite


if __name__ == "__main__":
    main()
