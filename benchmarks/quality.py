"""Quality proxy: the few-step recipes against ComfyUI's samplers on models whose exact denoiser is known.

Three analytic "models" in the SD latent shape (4 x 8 x 8), each scaled to unit average variance, the
ranking reported on each separately (MODELS): a mixture of Gaussians with anisotropic diagonal
covariances; a mixture of many narrow Gaussians in tight clusters; and data on circles and 2-spheres
in random subspaces (a curved low-dimensional set). A Gaussian mixture's noisy marginal at sigma is the
same mixture with covariances Sigma_k + sigma^2 I; on a sphere the posterior of the point given x is von
Mises-Fisher; so each denoiser D(x, sigma) = E[x0 | x] is exact and cheap. It is plugged into ComfyUI's
real sampling path: ``KSAMPLER.sample`` of core samplers (``comfy.samplers.sampler_object``) and of the
pack's samplers (KSampler names, Few-Step DPM++ Sampler, Few-Step UniPC Sampler), with a real SD1.5
``ModelSamplingDiscrete`` + ``EPS`` object for noise scaling and schedules (``KSampler``'s own sigmas for
core schedulers, AYS / GITS nodes where the ComfyUI under test has them, the pack's nodes for the
recipes). Every model evaluation is counted.

For each budget of model evaluations (NFE) every method reports
  - the Frechet distance between its samples and the exact model (exact mean and covariance,
    full 256 x 256), mean and 95% interval over seeds;
  - the RMS distance to a high-accuracy solution (RK4 in log-sigma) of the same probability-flow
    ODE from the same noise, at the sigma where the method stops and at sigma = 0.
With tuning on (the default), the schedule tuner (fewstep/tuner.py) first tunes a schedule per model,
budget and solver (DPM++2M, DPM++1S, UniPC, UniPC + AFS) on probe noises disjoint from the evaluation
noises; the tuned schedules then run through Few-Step Sigmas' `params` input and the pack's sampler
for that solver like every other method; at 5, 6 and 8 the tuner's ``learn`` (solver weights, with and without
model times) then starts from the best tuned schedule, and each fit its held-out check keeps is a row too.

    python benchmarks/quality.py            # full run, writes docs/quality.md and docs/quality.png
    python benchmarks/quality.py --quick    # a few methods, one seed, no docs (the smoke test)
    python benchmarks/quality.py --no-tuned # without the tuned rows (and without the learned ones)
    python benchmarks/quality.py --no-learned   # without the learned solver weights and model times
    python benchmarks/quality.py --models spheres --seeds 2   # one model, fewer seeds
    python benchmarks/quality.py --workers 1   # the models one after another in this process (default: 2 at once)
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/quality.py   # another ComfyUI than PINNED

The modules, each importing only those above it:
    quality_models.py    the analytic models, their exact denoiser, FD, the reference ODE solution
    quality_methods.py   ComfyUI under test, the methods (sampler + schedule, counted NFE), plan
    quality_tuning.py    the rows made per model: tuned schedules, the tuner's learned fits, the ceiling
    quality_scores.py    one method's scores per seed (Row), and how an analytic or trained model scores it
    quality_ranking.py   running every method on every model and ranking the scores per budget
    quality_figures.py   docs/quality.png (distance against evaluations) and the trained models' sample grids
    quality_learned_checks.py  issue 24's checks of the learned rows: against their start, the speed-up targets
    quality_report.py    docs/quality.md and the printed tables (it draws the figures)
    quality.py           this command line
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from quality_ceiling import CeilingCache
from quality_methods import QUICK, Config
from quality_models import MODELS
from quality_ranking import Suite, run
from quality_report import DOCS, print_tables, write_docs
from quality_trained import trained_models

CEILINGS = DOCS / "quality_ceiling.json"


def main(argv=None) -> Suite:
    """The command line: run the benchmark with the options given, print its tables, write its docs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few methods, one seed, no docs (the smoke test)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--samples", type=int)
    known = [*MODELS, *trained_models()]
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(known)}")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/quality.md and docs/quality.png")
    parser.add_argument("--no-tuned", action="store_true", help="leave out the tuned schedules (no tuning runs)")
    parser.add_argument("--tune-seconds", type=float, help="time budget of each tuning run")
    parser.add_argument("--ceiling", action="store_true",
                        help=f"run the ceiling searches again instead of reading them from {CEILINGS.name}")
    parser.add_argument("--no-ceiling", action="store_true", help="leave out the ceiling rows")
    parser.add_argument("--trained-samples", type=int, help="samples per seed on the trained models")
    parser.add_argument("--learn-seconds", type=float, help="time budget of each learned fit (weights, model times)")
    parser.add_argument("--no-learned", action="store_true", help="leave out the learned rows (no learned fits)")
    parser.add_argument("--learn-probes", type=int, help="probe noises of each learned fit on the trained models")
    parser.add_argument("--learn-larger", action="append", metavar="NFE,PROBES,RUNS",
                        help="on the trained models, the learned fit at NFE on PROBES probes (as many held out) and "
                             "RUNS runs (repeatable; e.g. 8,128,400)")
    parser.add_argument("--trained-threads", type=int,
                        help="torch threads while a trained network runs with --workers 1 (default 2; 1 when two runs "
                             "share 2 cores); each worker of --workers 2 runs on 1")
    parser.add_argument("--workers", type=int,
                        help=f"models run in this many processes at once, 1 torch thread each (default "
                             f"{Config.workers}; 1: one after another in this process)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = QUICK if options.quick else Config()
    if options.seeds:
        config = replace(config, seeds=options.seeds)
    if options.samples:
        config = replace(config, samples=options.samples)
    if options.models:
        models = tuple(options.models.split(","))
        unknown = [m for m in models if m not in known]
        if unknown:
            parser.error(f"--models: {unknown} not in {known}")
        config = replace(config, models=models)
    if options.no_tuned:
        config = replace(config, tuned=False)
    if options.tune_seconds:
        config = replace(config, tune_seconds=options.tune_seconds)
    if options.no_ceiling:
        config = replace(config, ceiling_evaluations=0)
    if options.learn_seconds:
        config = replace(config, learn_seconds=options.learn_seconds)
    if options.no_learned:
        config = replace(config, learn_budgets=())
    if options.trained_threads:
        config = replace(config, trained_threads=options.trained_threads)
    if options.learn_probes:
        config = replace(config, trained_learn_probes=options.learn_probes)
    if options.learn_larger:
        try:
            larger = tuple(tuple(int(v) for v in text.split(",")) for text in options.learn_larger)
            if any(len(entry) != 3 or min(entry) < 1 for entry in larger):
                raise ValueError
        except ValueError:
            parser.error(f"--learn-larger: {options.learn_larger} is not NFE,PROBES,RUNS (positive integers)")
        config = replace(config, trained_learn_larger=larger)
    if options.workers:
        config = replace(config, workers=options.workers)
    if options.trained_samples:
        config = replace(config, trained_samples=options.trained_samples)
    suite = run(config, ceilings=CeilingCache(CEILINGS, refresh=options.ceiling))
    print_tables(suite)
    if not (options.quick or options.no_docs):
        write_docs(suite)
        print(f"\nwrote {DOCS / 'quality.md'}, {DOCS / 'quality.png'} and the trained models' sample grids")
    return suite


if __name__ == "__main__":
    main()
