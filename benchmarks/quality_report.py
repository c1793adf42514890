"""The quality benchmark's report: docs/quality.md (markdown, with the figures of quality_figures.py) and the printed
tables."""

from __future__ import annotations

import datetime
import math
import sys
from functools import partial

from quality_figures import plot, sample_grid
from quality_learned_checks import FOUR_X, FOUR_X_BUDGET, against_start, speedup_factor, speedup_targets
from quality_methods import HELD_OUT_SEED, REPO, TUNE_SEED
from quality_models import LATENT_SHAPE
from quality_ranking import (
    METRICS,
    Results,
    Row,
    Suite,
    ceiling_shares,
    first_or_tied,
    fmt,
    headline,
    paired,
    target,
)

DOCS = REPO / "docs"

HEADER = "| rank | method | steps | NFE | σ end | FD (95% CI) | FD − #1 (paired) | RMS at σ end | RMS at 0 |"
RULE = "|---:|---|---:|---:|---:|---|---|---:|---:|"


def row_line(rank, row: Row, first: Row | None = None) -> str:
    """One row of a ranking as a markdown table line."""
    m = row.method
    name = f"**{m.name}**" if m.pack else m.name
    return (f"| {rank} | {name} | {m.steps} | {m.nfe} | {m.sigma_end:.4g} | {fmt(row.fd)} | {paired(row, first)} | "
            f"{_number(Row.stats(row.rms_end)[0])} | {_number(Row.stats(row.rms_zero)[0])} |")


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "-"


def _steps(found: tuple) -> str:
    """'M (interpolated)' of a speed-up search, or '> 40'."""
    first, interpolated = found
    return f"{first} ({interpolated:.1f})" if first is not None else "> 40"


def _ratio(found: tuple, budget: int) -> str:
    factor = speedup_factor(found, budget)
    return f"{factor:.2f}x" if found[0] is not None else f"> {factor:.1f}x"


def speedup_lines(suite: Suite, metric: str) -> list[str]:
    """The quality-equivalent speed-up table in one metric (markdown)."""
    sweep = suite.config.sweep_label
    out = [f"| model | NFE N | best Few-Step row ({metric}) | {sweep} steps M to reach it (interpolated) | "
           "M / N | best core pair at each step count: M | M / N |", "|---|---:|---|---|---:|---|---:|"]
    for results in suite.models:
        for s in (s for s in results.speedups if s.metric == metric):
            below = f"; below {sweep} at 40 steps" if s.dpmpp[0] is None and s.target < s.converged else ""
            out.append(f"| {results.model} | {s.budget} | {s.row} ({s.target:.3g}{below}) | {_steps(s.dpmpp)} | "
                       f"{_ratio(s.dpmpp, s.budget)} | {_steps(s.core)} | {_ratio(s.core, s.budget)} |")
    return out


def ceiling_lines(suite: Suite) -> list[str]:
    """The tuned rows against the ceiling search (markdown)."""
    out = ["| model | NFE | objective: recipe | tuned (best solver) | ceiling | tuned share of the ceiling's gain | "
           "ceiling schedule (schedules run, seconds) |", "|---|---:|---:|---|---:|---:|---|"]
    for results in suite.models:
        texts = {c.budget: c for c in results.ceilings}
        for budget, recipe, tuned_value, ceiling, share, solver in ceiling_shares(results):
            c = texts[budget]
            out.append(f"| {results.model} | {budget} | {recipe:.4f} | {tuned_value:.4f} ({solver}) | {ceiling:.4f} | "
                       f"{100 * share:.0f} % | `{c.text}` ({c.evaluations}, {c.seconds:.0f} s) |")
    return out


TABLE_ROWS = 30  # rows of each ranking written to docs/quality.md (every Few-Step row is written too)


def markdown_model(results: Results) -> list[str]:
    """The markdown section of one model: headline, ranking per budget, tuning runs, references."""
    c = results.config
    if results.trained:
        shift = results.shift
        reference = (f"{results.seeds} seeds x {results.samples} samples. Reference: ComfyUI's dpmpp_2m on "
                     f"KSampler's Karras schedule, {shift.steps} steps to sigma 0, from the same noises; against "
                     f"{2 * shift.steps} steps (seed 0): RMS {shift.rms:.2g}, FD between the two "
                     f"{shift.fd_between:.2g}, largest change "
                     f"of a ranked row's FD {shift.fd_shift:.2g}. Core pairs ranked: the {c.trained_keep} per budget "
                     f"with the lowest RMS to the reference on {c.trained_screen} other noises (of "
                     + ", ".join(f"{n} at {b}" for b, n in sorted(results.screened.items())) + ").")
    else:
        reference = (f"Reference RK4 with {c.reference_steps} log-sigma steps (RMS change against half as many steps: "
                     f"{results.reference_check:.1e}).")
    out = [f"### Model: {results.model}", "",
           f"{results.description}; {results.seconds:.0f} s (tuning included). {reference}", "", "Headline:", ""]
    out += [f"- {line}" for line in headline(results)]
    for budget in c.budgets:
        table = results.table(budget)
        out += ["", f"#### {results.model}, NFE budget {budget}", "", HEADER, RULE]
        out += [row_line(i + 1, r, table[0]) for i, r in enumerate(table) if i < TABLE_ROWS or r.method.pack]
        if len(table) > TABLE_ROWS:
            out += ["", f"{len(table)} rows; core rows below rank {TABLE_ROWS} are left out here "
                        "(`python benchmarks/quality.py` prints them all)."]
    if results.tunings:
        out += ["", f"#### {results.model}, tuned schedules", "",
                f"Tuned by `fewstep/tuner.py` on {c.trained_tune_probes if results.trained else c.tune_probes} "
                f"probe noises (seed {TUNE_SEED} + budget, disjoint "
                f"from the evaluation seeds), time budget {c.tune_seconds:.0f} s each; objective: mean per-probe RMS "
                "of x_N to a 40-step DPM++2M solution at sigma 0. The string is what the rows above pasted into "
                "Few-Step Sigmas' `params`.", "",
                "| NFE | solver | objective: recipe -> tuned | schedules | model evaluations | seconds | stopped "
                "| params |",
                "|---:|---|---|---:|---:|---:|---|---|"]
        for t in results.tunings:
            r = t.result
            out.append(f"| {t.budget} | {t.solver} | {r.start_objective:.4f} -> {r.objective:.4f} | {r.candidates} | "
                       f"{r.model_evaluations} | {r.seconds:.1f} | {r.stopped_by} | `{r.text}` |")
    if results.learnings:
        from fewstep.params import format_params

        larger = {budget: runs for budget, _, runs in c.trained_learn_larger} if results.trained else {}
        budget = (f"{c.trained_learn_runs} runs on its probes per fit" if results.trained
                  else f"{c.learn_seconds:.0f} s per fit")
        budget += "".join(f"; {runs} at NFE {n}" for n, runs in sorted(larger.items()))
        out += ["", f"#### {results.model}, learned solver weights and model times", "",
                f"The tuner's `learn` (`fewstep/tuner_learn.py`, {budget}) from the best tuned "
                f"schedule of each budget, fitted on the probe noises its row gives and judged on as many others "
                f"(seed {HELD_OUT_SEED} + budget) against their 40-step DPM++2M solutions (mean per-probe RMS); a fit "
                "the held-out check keeps is a \"FewStep learned\" row above, its text pasted into Few-Step Sigmas' "
                "and Few-Step DPM++ Sampler's `params`.", "",
                "| NFE | learn | from | probes | probes: schedule -> learned | held out: schedule -> learned | kept "
                "| runs | model evaluations | seconds | params |",
                "|---:|---|---|---:|---|---|---|---:|---:|---:|---|"]
        for fit in results.learnings:
            r = fit.result
            out.append(f"| {fit.budget} | {fit.mode} | {fit.start} | {fit.probes} | "
                       f"{r.tuning[0]:.4f} -> {r.tuning[1]:.4f} | "
                       f"{r.held_out[0]:.4f} -> {r.held_out[1]:.4f} | {'yes' if r.learned else 'no'} | {r.runs} | "
                       f"{r.evaluations} | {r.seconds:.0f} | `{format_params(r.fitted)}` |")
    out += ["", f"#### {results.model}, reference rows", "", HEADER, RULE, row_line("-", results.baseline())]
    out += [row_line("-", r) for r in results.off_budget()]
    f = results.floor
    if f is not None:
        out += [f"| - | {f.method.name} (FD floor at this sample size) | - | - | 0 | {fmt(f.fd)} | - | - | - |"]
    if results.sweep:
        out += ["", f"{c.sweep_label} by steps (the speed-up search): "
                + ", ".join(f"{m}: {results.sweep[m].mean_fd:.3g}" for m in sorted(results.sweep))]
    return out + [""]


# How each trained model's 100-step reference samples look (docs/quality_samples_<model>.png), written by hand
# after looking at them; a model missing here gets no such sentence.
LOOKS: dict[str, str] = {}


def trained_notes(suite: Suite) -> list[str]:
    """A short note per trained model: data, network, training record (final loss), how its samples look."""
    if not any(results.trained for results in suite.models):
        return []
    from proxies.models import PROXIES, manifest
    from quality_trained import trained_models

    models = trained_models()
    records = manifest()
    out, seen = ["### The trained models", ""], set()
    for results in suite.models:
        if not results.trained or models[results.model].proxy in seen:
            continue
        proxy = models[results.model].proxy
        seen.add(proxy)
        spec, record = PROXIES[proxy], records.get(proxy, {})
        keys = [r.model for r in suite.models if r.trained and models[r.model].proxy == proxy]
        looks = " ".join(LOOKS.get(key, "") for key in keys).strip()
        out.append(f"- **{proxy}** (benchmark models {', '.join(keys)}). Data: {spec.data}. {spec.note} "
                   f"{record.get('parameters', '?')} parameters, {record.get('steps', '?')} training steps "
                   f"(batch {record.get('batch', '?')}, {record.get('seconds', '?')} s on {record.get('threads', '?')} "
                   f"thread(s)), final loss {record.get('final_loss', '?')} (mean of the last "
                   f"{record.get('final_loss_steps', '?')} steps). {looks} Samples: "
                   + ", ".join(f"[quality_samples_{key}.png](quality_samples_{key}.png)" for key in keys) + ".")
    return out + [""] if len(out) > 2 else []


def target_lines(suite: Suite) -> list[str]:
    """Issue 24's speed-up targets on the trained proxies, met or not, from the FD speed-up table."""
    rows = speedup_targets(suite)
    if not rows:
        return []
    out = ["", "### The learned solver's targets on the trained proxies", "",
           f"Issue 24: a quality-equivalent speed-up over {suite.config.sweep_label} by FD (the table above, "
           "interpolated M / N) of at least 2.5x at 5 and 6 evaluations and 2x at 8 on every trained proxy, and "
           f"{FOUR_X:g}x at {FOUR_X_BUDGET} on at least one. Where one is not met, what limits it is measured in "
           "[learned.md](learned.md) (\"What limits it\").", "",
           f"- met in {sum(r[5] for r in rows)} of {len(rows)} cells"]
    at_four = [r for r in rows if r[1] == FOUR_X_BUDGET]
    if at_four:
        model, _, _, _, factor, _ = max(at_four, key=lambda r: r[4])
        out.append(f"- {FOUR_X:g}x at {FOUR_X_BUDGET} evaluations on one proxy: "
                   f"{'met' if factor >= FOUR_X else '**not met**'} (best {factor:.2f}x, {model})")
    out += ["", "| proxy | NFE | target | best Few-Step row | speed-up by FD | met? |", "|---|---:|---:|---|---:|---|"]
    out += [f"| {model} | {n} | {goal:g}x | {row} | {factor:.2f}x | {'yes' if met else '**no**'} |"
            for model, n, goal, row, factor, met in rows]
    return out


def start_lines(suite: Suite) -> list[str]:
    """The learned rows against the tuned schedules their fits started from: a count per kind of model and a table."""
    found = [(results, row) for results in suite.models for row in against_start(results)]
    if not found:
        return []

    def interval(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.3g} ± {pair[1]:.2g}" if math.isfinite(pair[0]) else "nan"

    out = ["", "### Learned rows against their start", "",
           "Each learned row (a fit the held-out check kept) against the tuned schedule its fit started from, on the "
           "same evaluation noises, seed by seed: learned − start in FD and in RMS at 0 (below 0: the learned row is "
           "closer). \"worse\" when the paired FD interval lies above 0.", ""]
    for kind, trained in (("analytic", False), ("trained", True)):
        rows = [row for results, row in found if results.trained == trained]
        if rows:
            out.append(f"- {kind} models: {sum(not r.worse for r in rows)} of {len(rows)} learned rows no worse than "
                       f"their start by FD ({sum(r.fd[0] < 0 for r in rows)} closer on average)")
    out += ["", "| model | NFE | learned row | its start | FD learned − start (paired) | RMS at 0 learned − start "
                "(paired) | worse? |", "|---|---:|---|---|---|---|---|"]
    for results, row in found:
        out.append(f"| {results.model} | {row.budget} | {row.learned.method.name} | {row.start.method.name} | "
                   f"{interval(row.fd)} | {interval(row.rms)} | {'**yes**' if row.worse else 'no'} |")
    return out


def markdown(suite: Suite) -> str:
    """The markdown section of one run (one ComfyUI version) for docs/quality.md."""
    c = suite.config
    first = suite.models[0]
    out = [f"## {suite.label}", "",
           f"Run {datetime.date.today().isoformat()} on {suite.machine}; {suite.seconds:.0f} s in all. "
           f"{c.seeds} seeds x {c.samples} samples per model, latents {LATENT_SHAPE}; models: "
           + ", ".join(r.model for r in suite.models) + ".", "",
           "Target: a Few-Step method (recipe, tuned schedule or learned) first at every budget on every model, or "
           "second within the paired 95 % interval of first (\"tied\"), among the pack's rows and ComfyUI's core "
           "pairs (the "
           "ceiling row, a yardstick for the tuner, is not a contender: ranks here leave it out). FD is to the exact "
           "model on the analytic models and to the network's own reference samples on the trained ones.", "",
           "| model | NFE | Few-Step first? | first, or tied? | #1, and #2 with the paired difference #2 − #1 "
           "(or the best Few-Step row) |",
           "|---|---:|---|---|---|"]
    for results in suite.models:
        for budget in c.ranked_budgets:
            met, line = target(results, budget)
            tied = first_or_tied(results, budget)
            out.append(f"| {results.model} | {budget} | {'yes' if met else '**no**'} | {tied} | {line} |")
    out += start_lines(suite)
    out += ["", "### Quality-equivalent speed-up", "",
            f"For each model and budget N: the {c.sweep_label} steps M (KSampler's schedule to sigma 0, searched up "
            "to 40) at which its distance first reaches the best Few-Step row's at N, in RMS at 0 to the same-noise "
            "reference (which keeps falling as a sampler converges) and in FD (which meets its finite-sample floor: "
            f"a Few-Step row below {c.sweep_label} at 40 steps has no finite M there), the first integer M and, in "
            "brackets, M interpolated in log distance from the step count before; then the same against the best "
            f"core pair at each step count (every ranked pair at the budgets; {c.sweep_label} and the best pairs of "
            f"the last ranked budget elsewhere: {c.speedup_pairs} on the analytic models, {c.trained_speedup_pairs} "
            "on the trained ones).", ""]
    for metric in METRICS:
        out += ["", f"In {metric}:", ""] + speedup_lines(suite, metric)
    out += target_lines(suite)
    if any(results.ceilings for results in suite.models):
        out += ["", "### The tuner against the ceiling", "",
                "The tuner's objective (mean per-probe RMS to the 40-step DPM++2M reference, on the tuning probes) for "
                "the recipe of N steps, the best tuned row and the ceiling: Powell (scipy) over the tuner's design "
                "space (end, time_rho, ramp; every solver; end at the index or at 0) with 1000+ distinct schedules "
                "(`benchmarks/quality_ceiling.py`, kept in docs/quality_ceiling.json).", ""]
        out += ceiling_lines(suite)
    out.append("")
    out += trained_notes(suite)
    for results in suite.models:
        out += markdown_model(results)
    if first.skipped_samplers:
        out += ["### Core samplers left out", ""]
        out += [f"- `{name}`: {reason}" for name, reason in first.skipped_samplers.items()]
        out += [""]
    if first.unfit:
        out += ["### Pairs with no step count inside a budget", ""]
        out += [f"- {name}: {reason}" for name, reason in first.unfit.items()]
        out += [""]
    return "\n".join(out)


INTRO = """# Quality: the recipes against ComfyUI's samplers, on analytic models and trained networks

Generated by `python benchmarks/quality.py` (`make bench-quality`; see its docstring); do not edit by hand.
Each ComfyUI version the script was run against keeps its own section below; the figures `quality.png`
(distance against evaluations, one panel per model) and `quality_samples_<model>.png` (the trained models'
pictures) are from the last run.

What it measures. Seven "models" in the SD latent shape 4 x 8 x 8, ranked separately, because a method that
is best on one model only is not the best. Three are analytic: a data distribution whose denoiser
D(x, sigma) = E[x0 | x] is known exactly, scaled to average variance 1 like scaled SD latents:

- **anisotropic**: a mixture of 6 Gaussians with anisotropic diagonal covariances (per-dimension
  standard deviations log-uniform over a 16x range);
- **clustered**: a mixture of 32 narrow Gaussians (standard deviations 0.01 to 0.08 of the spread) in
  8 tight clusters of 4: almost all of the variance lies between components, so the denoiser switches
  sharply between them at low sigma;
- **spheres**: data on a curved low-dimensional set, 3 circles and 3 2-spheres in random subspaces
  (covariance rank 20 of 256). Given a component, the posterior over the sphere is von Mises-Fisher,
  so the denoiser is closed-form (Bessel-function ratios, coth - 1/kappa); every direction off the
  spheres is empty, so noise left there counts in full.

Four are trained networks (`benchmarks/proxies`, `make train-proxies`; notes per model below): small UNets
loaded as real ComfyUI models (their own model_sampling: eps or v, SD1.5's table or its zero-terminal-SNR
rescale) and sampled through `comfy.sample.sample_custom` (conditioning and classifier-free guidance by
ComfyUI): **photo_eps**, **photo_v_zsnr**, and the class-conditional **digits_cond** at cfg 1 and at cfg 5.

Every method runs through ComfyUI's real `KSAMPLER.sample` (noise scaling, schedules from `KSampler`
including its discard-penultimate rule, AYS and GITS from their core nodes, the recipes from the pack's
Few-Step Sigmas node, the DPM++ recipes through the pack's KSampler names / Few-Step DPM++ Sampler, the UniPC
recipes through Few-Step UniPC Sampler with order auto, bh1, noise form and afs as the recipe says); model
evaluations are counted (on a trained model: calls of the guided denoiser, whatever CFG batches inside). A
method competes at a budget with the most steps whose counted NFE fits it (heun at 5 NFE is 3 steps: its
last step to sigma 0 is a single Euler evaluation). The recipes run without FreeU; SD1.5 6-step and SDXL
6-step then coincide. "+ denoised" adds one evaluation at the last sigma (finish = denoised) and competes at
N+1. "FewStep tuned (solver)" is a schedule the pack's tuner found for that model, budget and solver on probe
noises disjoint from the evaluation noises, pasted into Few-Step Sigmas' `params` and sampled with the pack's
sampler for that solver. "FewStep learned (weights)" / "(weights+model time)" is the tuner's `learn` from the
best tuned schedule at 5, 6 and 8 (its solver weights, with the model times too), kept only where its held-out
check on other noises finds it closer to the reference (a table per model below); it runs through Few-Step
Sigmas and Few-Step DPM++ Sampler with the same `params` text.
"FewStep ceiling (Powell)" is a long generic search in the tuner's design space
(below); it is not a Few-Step row for the target (no user gets it without that search).

Budgets 5, 6 and 8 are ranked against every deterministic core scheduler x sampler pair; 10 and 12 show
the trend: the pack's rows, the tuned ones and the 5 best core pairs at 8 (3 on the trained models; every
pair there would double the run time).

Yardsticks.
- Analytic models: FD, the Frechet distance of the samples to the exact model (mean and full 256 x 256
  covariance); RMS at σ end / at 0: RMS distance to an RK4 solution of the same probability-flow ODE from
  the same start latent, at the sigma where the method stops and at sigma 0. The last row of each analytic
  model's reference table is the FD of exact samples, the floor a perfect sampler would reach at this sample
  size.
- Trained models: no exact moments, and a truncated sampler can look closer to the training data than a
  converged one, so a method is scored against what the network itself converges to: FD to the empirical
  moments of its reference samples (ComfyUI's dpmpp_2m, 100 Karras steps to sigma 0, from the same noises)
  and RMS at 0 to the same-noise reference. The reference is checked at half the step size (200 steps, seed
  0): the RMS between the two and the largest change of any ranked row's FD are printed per model, to be read
  against the differences the table reports.
- mean ± 1.96 sd / sqrt(seeds). Every method gets the same noise in a seed, so most of that spread is
  shared: "FD − #1 (paired)" is the seed-by-seed difference to the budget's winner with its own interval,
  the number to read when two methods' intervals overlap; "tied" in the target table means the best
  Few-Step row's paired interval against #1 reaches 0.
- A schedule that stops above 0 (the recipes' default) keeps its residual noise in "RMS at 0" and in FD:
  the paper relies on the VAE to tolerate it, which neither the analytic models nor these networks (whose
  "decoder" is a pixel shuffle) can show.

Quality-equivalent speed-up: for each model and budget N, the number of DPM++2M Karras steps M (searched up
to 40: every step count up to 12, then 14, 16, 20, ... 40, and every step count inside the bracket found) at
which its FD first reaches the best Few-Step row's FD at N, and M / N; the same against the best core pair
at each step count. The ceiling: Powell (scipy) on the tuner's own objective and probes over its design
space (the end as log sigma_end or the end at sigma_min, time_rho, the ramp's logits), for every solver and
for end = index and end = 0: 30 schedules per combination, then the 3 best share the rest, 1000 distinct
schedules at least (`benchmarks/quality_ceiling.py`); the searches are kept in `docs/quality_ceiling.json`
and reused by later runs (`--ceiling` runs them again). The tuner's share of the ceiling's gain over the
recipe is (recipe − tuned) / (recipe − ceiling) in that objective.

The models run in 2 worker processes of 1 torch thread each, the longest first (`--workers 1`: one after another in
one process, the trained networks on 2 threads). Sample sizes, deliberately reduced (the aim was about 30 minutes
per ComfyUI version on 2 cores; measured alone on the 2-core machine, the default, 2026-12-06: 1539 s on PINNED,
1629 s on 0.3.64, which ranks more core pairs; one process alone took 1771 s and 2015 s on 2026-12-05; each section
gives its time, and each model's section its own, in its worker with the other one beside it): analytic models 3
seeds x 1024 samples, 128 probes per tuning run and learned fit (128 more held out); trained models 2 seeds x 256
samples (a 256-sample batch of a trained network costs about a hundred times an analytic evaluation), their core
pairs screened first on 32 other noises (the 8 with the lowest RMS to the reference per budget are ranked in full; 3
at the trend budgets), 16 probes for tuning and the ceiling (the tuner node's default is 4), 64 for the learned fit
(the tuning probes and 48 more; 64 more held out), one fit per budget, the model-time one (it fits the weights too;
the weights-only fit is left out on the trained models for time). Every tuning run at the ranked budgets (5, 6, 8)
is the node's: at most 300 candidates and 120 s; at the trend budgets (10, 12) at most 100 candidates; every learned
fit 30 s on the analytic models and 240 runs on its probes on the trained ones (a budget in runs, so that a fit is
the same beside another worker or on another machine; 240 is what 30 s gave at 5 and 6 evaluations on 2 threads
alone; `--learn-larger` gives a budget more probes and runs). With 1024 samples in 256 dimensions the analytic FD
floor is higher (the exact-sample row) and the intervals wider; with 256 samples the trained models' FD is a distance
between two rank-deficient covariances: read it paired. Each section gives the run's total time, tuning included.
"""


def write_docs(suite: Suite) -> None:
    """Write this run's section of docs/quality.md and the plot docs/quality.png."""
    sys.path.insert(0, str(REPO / "scripts"))
    from comfyui_runtime import write_version_section

    write_version_section(DOCS / "quality.md", INTRO, "quality", suite.label, markdown(suite))
    plot(suite, DOCS / "quality.png")
    trained = [results for results in suite.models if results.trained]
    if trained:
        from proxies.comfy_model import latent_to_image
        from quality_trained import trained_models

        proxies = trained_models()
        for results in trained:
            sample_grid(results, partial(latent_to_image, proxies[results.model].proxy),
                        DOCS / f"quality_samples_{results.model}.png")


def print_tables(suite: Suite) -> None:
    """Print every ranking in full, then each model's headline."""
    print(f"\n{suite.label}: {suite.seconds:.0f} s")
    for results in suite.models:
        for budget in results.config.budgets:
            print(f"\n{results.model}, NFE budget {budget}")
            print(f"{'rank':>4}  {'method':<52} {'steps':>5} {'NFE':>3} {'sigma_end':>9}  {'FD':<20} "
                  f"{'paired vs #1':<16} {'RMS@end':>8} {'RMS@0':>8}")
            table = results.table(budget)
            for i, row in enumerate(table):
                m = row.method
                print(f"{i + 1:>4}{'*' if m.pack else ' '} {m.name:<52} {m.steps:>5} {m.nfe:>3} "
                      f"{m.sigma_end:>9.4g}  {fmt(row.fd):<20} {paired(row, table[0]):<16} "
                      f"{_number(Row.stats(row.rms_end)[0]):>8} {_number(Row.stats(row.rms_zero)[0]):>8}")
    for results in suite.models:
        print(f"\n{results.model} ({results.seconds:.0f} s):")
        for line in headline(results):
            print(line)
        for budget in results.config.ranked_budgets:
            print(f"NFE {budget}: Few-Step {first_or_tied(results, budget)}")
    for metric in METRICS:
        print(f"\nQuality-equivalent speed-up, {metric}")
        print("\n".join(speedup_lines(suite, metric)))
    if any(results.ceilings for results in suite.models):
        print("\nThe tuner against the ceiling")
        print("\n".join(ceiling_lines(suite)))
    skipped = suite.models[0].skipped_samplers
    if skipped:
        print("\nleft out: " + ", ".join(skipped))
