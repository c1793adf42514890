"""The tuner's learned solver weights and model times on the trained proxies (issue 24), against the schedule alone.

For each proxy (``benchmarks/proxies``, a real ComfyUI model sampled through ``sample_custom``) and NFE: the schedule
tuner (``fewstep.tuner.tune``, solver auto) on ``--probes`` noises, then ``fewstep.tuner_learn.learn`` with
``schedule+weights`` and ``schedule+weights+model time`` from that schedule (its held-out check on as many other
noises), each within the time given. Every row is then measured on ``--eval`` noises used by none of them: the
Frechet distance (FD) to the proxy's own ``--reference-steps``-step DPM++2M Karras samples from the same noises and
the RMS to them, and the DPM++2M Karras step count with equal FD (``quality_yardsticks.speedup_steps``).

    python benchmarks/learned.py                          # photo_eps, digits_cond_cfg5, NFE 5 6 8 (make bench-learned)
    python benchmarks/learned.py --models photo_eps digits_cond_cfg5 --nfe 5
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from fewstep.plan import params_solver  # noqa: E402
from fewstep.tuner import compute_reference, denoiser_run, tune  # noqa: E402
from fewstep.tuner_learn import LEARN_MODEL_TIME, LEARN_REFERENCE_STEPS, LEARN_WEIGHTS, learn  # noqa: E402

PROBE_SEED, EVAL_SEED = 1, 2


def rows_for(comfy, key: str, args, log=print) -> list[dict]:
    """Tune, learn and measure every NFE of one benchmark model."""
    from quality_trained import TrainedTarget, trained_models
    from quality_yardsticks import Moments, rms, speedup_steps

    target = TrainedTarget(comfy, trained_models()[key])
    table = target.ms.sigmas.double().cpu()
    preconditioning = comfy.pack.nodes.comfy_api.preconditioning_of(target.ms)  # as the tuner node reads it
    shape = target.latent_shape
    probes = torch.randn((2 * args.probes, *shape), generator=torch.Generator().manual_seed(PROBE_SEED))
    evaluation = torch.randn((args.eval, *shape), generator=torch.Generator().manual_seed(EVAL_SEED))
    began = time.monotonic()
    reference = target.reference(evaluation, args.reference_steps)
    moments = Moments.of(reference)
    log(f"{key}: reference on {args.eval} noises, {time.monotonic() - began:.0f} s")

    def work(denoiser, x):
        run = denoiser_run(denoiser, x[:args.probes], table, preconditioning)
        held_out_run = denoiser_run(denoiser, x[args.probes:], table, preconditioning)
        probe_reference = compute_reference(run, table)  # the search's; the fits take finer ones, as the node does
        fit_reference, held_out_reference = (compute_reference(run, table, LEARN_REFERENCE_STEPS),
                                             compute_reference(held_out_run, table, LEARN_REFERENCE_STEPS))
        found = []
        for nfe in args.nfe:
            tick = time.monotonic()
            tuned = tune(run, table, nfe, "auto", time_budget=args.tune_seconds, reference=probe_reference,
                         max_candidates=300)
            seconds = time.monotonic() - tick
            found.append((nfe, "schedule (today's tuner)", tuned.params, tuned.model_evaluations, seconds, ""))
            log(f"  N={nfe} schedule {tuned.objective:.4g} ({tuned.candidates} candidates, {seconds:.0f} s) "
                f"{tuned.text}")
            start = tuned
            if args.learn_start != "auto":  # the fits start from a schedule tuned for this solver instead
                start = tune(run, table, nfe, args.learn_start, time_budget=args.tune_seconds,
                             reference=probe_reference, max_candidates=300)
                log(f"  N={nfe} learn start: schedule for {args.learn_start} {start.objective:.4g} ({start.text})")
            for mode in (LEARN_WEIGHTS, LEARN_MODEL_TIME):
                learned = learn(run, fit_reference, held_out_run, held_out_reference, table, start.params, mode,
                                time_budget=args.learn_seconds)
                fitted = learned.fitted
                label = f"{mode} ({'kept' if learned.learned else 'fitted, not kept'})"
                found.append((nfe, label, fitted, tuned.model_evaluations + learned.evaluations,
                              seconds + learned.seconds, learned.reason))
                log(f"  N={nfe} {mode}: probes {learned.tuning[0]:.4g} -> {learned.tuning[1]:.4g}, held out "
                    f"{learned.held_out[0]:.4g} -> {learned.held_out[1]:.4g} ({learned.runs} runs, "
                    f"{learned.seconds:.0f} s) {learned.reason}")
        return found

    found = target.with_denoiser(probes, work)
    fd_curve: dict[int, float] = {}
    rms_curve: dict[int, float] = {}
    sampler = comfy.samplers.sampler_object("dpmpp_2m")
    karras: dict[int, torch.Tensor] = {}

    def karras_out(steps: int) -> torch.Tensor:
        if steps not in karras:
            karras[steps] = target.sample(sampler, target.reference_sigmas(steps), evaluation)[0]
        return karras[steps]

    rows = []
    for nfe, label, params, evaluations, seconds, reason in found:
        def sample(denoiser, x, params=params):
            return denoiser_run(denoiser, x, table, preconditioning)(params.sigmas(table), params_solver(params))

        out = target.with_denoiser(evaluation, sample).cpu()
        fd, distance = moments.fd(out), rms(out, reference)
        _, steps = speedup_steps(lambda m: moments.fd(karras_out(m)), fd, curve=fd_curve)
        _, rms_steps = speedup_steps(lambda m: rms(karras_out(m), reference), distance, curve=rms_curve)
        rows.append(dict(model=key, nfe=nfe, row=label, fd=fd, rms=distance, steps=steps, rms_steps=rms_steps,
                         evaluations=evaluations, seconds=seconds, text=_text(params), reason=reason))
        log(f"  N={nfe} {label}: FD {fd:.4g} RMS {distance:.4g}, DPM++2M Karras steps with equal FD {steps}, RMS "
            f"{rms_steps}")
    return rows


def _text(params) -> str:
    from fewstep.params import format_params

    return format_params(params)


def table(rows: list[dict]) -> str:
    lines = ["| model | NFE | row | FD | RMS | DPM++2M Karras steps with equal FD (speed-up) | ... with equal RMS | "
             "tuning evaluations | tuning s |", "|---|---|---|---|---|---|---|---|---|"]

    def steps(value, nfe) -> str:
        return "> 40" if value is None else f"{value:.1f} ({value / nfe:.2f}x)"

    for r in rows:
        lines.append(f"| {r['model']} | {r['nfe']} | {r['row']} | {r['fd']:.4g} | {r['rms']:.4g} | "
                     f"{steps(r['steps'], r['nfe'])} | {steps(r['rms_steps'], r['nfe'])} | {r['evaluations']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["photo_eps", "digits_cond_cfg5"],
                        help="benchmark models (quality_trained.trained_models keys)")
    parser.add_argument("--nfe", nargs="+", type=int, default=[5, 6, 8])
    parser.add_argument("--probes", type=int, default=32, help="tuning noises (and as many held-out for the check)")
    parser.add_argument("--eval", type=int, default=1024, help="noises the rows are measured on (used by none)")
    parser.add_argument("--reference-steps", type=int, default=100)
    parser.add_argument("--tune-seconds", type=float, default=60.0)
    parser.add_argument("--learn-seconds", type=float, default=30.0)
    parser.add_argument("--learn-start", default="auto",
                        help="the schedule the fits start from: the auto row's (default), or one tuned for this solver "
                             "(dpmpp_2m, dpmpp_1s), its search time not counted in the rows' tuning cost")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from quality_methods import load_comfyui

    comfy = load_comfyui()
    began = time.monotonic()
    rows = []
    for key in args.models:
        rows += rows_for(comfy, key, args)
    print()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{datetime.date.today()}, {platform.machine()}, {args.threads} thread(s), "
          f"{time.monotonic() - began:.0f} s: python benchmarks/learned.py {command}")
    print(table(rows))
    for r in rows:
        print(f"- {r['model']} N={r['nfe']} {r['row']}: `{r['text']}`" + (f" ({r['reason']})" if r["reason"] else ""))


if __name__ == "__main__":
    main()
