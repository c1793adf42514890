"""The quality benchmark's scores and ranking: every method run on every analytic model, ranked per budget.

Scores per seed (Frechet distance to the exact model, RMS to the reference ODE solution), their means with
95 % intervals, the paired difference to a budget's winner, and whether a Few-Step method is first.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from quality_methods import Config, Harness, Method, Tuning, load_comfyui, plan
from quality_models import LATENT_SHAPE, MODELS, frechet_distance, reference_solution

log = logging.getLogger("quality")


@dataclass
class Row:
    """One method's scores, one value per seed."""

    method: Method
    fd: list[float] = field(default_factory=list)
    rms_end: list[float] = field(default_factory=list)
    rms_zero: list[float] = field(default_factory=list)

    @staticmethod
    def stats(values: list[float]) -> tuple[float, float]:
        """Mean and 95% half-width (1.96 sd / sqrt(n)); 0 with one seed."""
        t = torch.tensor(values, dtype=torch.float64)
        half = 1.96 * float(t.std()) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        return float(t.mean()), half


@dataclass
class Results:
    """Every method's scores on one analytic model, and what the run left out."""

    config: Config
    label: str
    rows: list[Row]
    skipped_samplers: dict[str, str]
    unfit: dict[str, str]  # method @ budget -> reason
    floor: Row  # exact samples from the mixture: FD's finite-sample floor
    reference_check: float  # RMS(ref_N - ref_N/2) at sigma 0 (seed 0)
    seconds: float
    machine: str
    tunings: list[Tuning] = field(default_factory=list)
    model: str = "anisotropic"  # the key of MODELS

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


@dataclass
class Suite:
    """One run: the same methods ranked on each analytic model of ``config.models``."""

    config: Config
    label: str
    models: list[Results]
    seconds: float
    machine: str

    def model(self, name: str) -> Results:
        """The results on the analytic model ``name``."""
        return next(r for r in self.models if r.model == name)


def run(config: Config = Config(), comfy: SimpleNamespace | None = None) -> Suite:
    """Plan the methods once, then per analytic model tune the schedules and score every method."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, comfy or load_comfyui())
    finally:
        torch.set_num_threads(threads)


def _run(config: Config, comfy: SimpleNamespace) -> Suite:
    began = time.perf_counter()
    harness = Harness(comfy, MODELS[config.models[0]][1](config.mixture_seed))
    methods, skipped, unfit = plan(harness, config)
    log.info("planned %d methods (%.0f s)", len(methods), time.perf_counter() - began)
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} torch thread(s); Python {platform.python_version()}, "
               f"torch {torch.__version__}")
    models = []
    for name in config.models:
        model_began = time.perf_counter()
        harness.use(MODELS[name][1](config.mixture_seed))
        tuned_rows, tunings = harness.tuned_methods(config) if config.tuned else ([], [])
        rows, floor, reference_check = evaluate(harness, config, methods + tuned_rows, name)
        models.append(Results(config, comfy.label, rows, skipped, unfit, floor, reference_check,
                              time.perf_counter() - model_began, machine, tunings, name))
    return Suite(config, comfy.label, models, time.perf_counter() - began, machine)


def evaluate(harness: Harness, config: Config, methods: list[Method], name: str) -> tuple[list[Row], Row, float]:
    """For each seed solve the reference ODE and score every method on the harness's current model."""
    began = time.perf_counter()
    mixture = harness.mixture
    rows = [Row(m) for m in methods]
    floor = Row(Method("exact samples of the model", "floor", "-", "-", 0, torch.zeros(1), None, 0.0))
    mean, covariance = mixture.mean(), mixture.covariance()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    covariance_sqrt = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    trace = float(covariance.trace())
    reference_check = float("nan")
    for seed in range(config.seeds):
        generator = torch.Generator().manual_seed(1000 + seed)
        noise = torch.randn((config.samples, *LATENT_SHAPE), generator=generator)
        floor.fd.append(frechet_distance(mixture.sample(config.samples, generator), mean, covariance_sqrt, trace))
        starts = {}  # (sigma_0, max_denoise) -> (start latent, sigmas where a method stops)
        for row in rows:
            x_start, key = harness.start(row.method, noise)
            starts.setdefault(key, (x_start, set()))[1].update({row.method.sigma_end, 0.0})
        references = {}
        for key, (x_start, ends) in starts.items():
            references[key] = reference_solution(mixture, x_start, key[0], ends, config.reference_steps)
            if seed == 0 and math.isnan(reference_check):
                coarse = reference_solution(mixture, x_start, key[0], set(), config.reference_steps // 2)
                reference_check = float((coarse[0.0] - references[key][0.0]).pow(2).mean().sqrt())
        for row in rows:
            m = row.method
            out, nfe = harness.sample(m.make_sampler(), m.sigmas, noise, seed)
            if nfe != m.nfe:
                raise AssertionError(f"{m.name}: {nfe} evaluations, planned {m.nfe}")
            states = references[harness.start(m, noise)[1]]
            flat = out.reshape(out.shape[0], -1).to(torch.float64)
            row.fd.append(frechet_distance(flat, mean, covariance_sqrt, trace))
            row.rms_end.append(float((flat - states[m.sigma_end]).pow(2).mean().sqrt()))
            row.rms_zero.append(float((flat - states[0.0]).pow(2).mean().sqrt()))
        log.info("%s: seed %d done (%.0f s)", name, seed, time.perf_counter() - began)
    return rows, floor, reference_check


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


def runner_up(table: list[Row]) -> str:
    """'#2 name FD, #2 − #1 paired' for a budget's table."""
    if len(table) < 2:
        return "no runner-up"
    return f"#2 {table[1].method.name} FD {fmt(table[1].fd)}, #2 − #1 paired {paired(table[1], table[0])}"


def target(results: Results, budget: int) -> tuple[bool, str]:
    """Whether a Few-Step method (recipe or tuned schedule) is first at ``budget``, and the line that says so:
    with the paired interval to the runner-up, or the best Few-Step row's paired gap to the winner."""
    table = results.table(budget)
    winner = table[0]
    if winner.method.pack:
        return True, f"#1 **{winner.method.name}** FD {fmt(winner.fd)}; {runner_up(table)}"
    rank, best = next((i + 1, r) for i, r in enumerate(table) if r.method.pack)
    return False, (f"#1 {winner.method.name} FD {fmt(winner.fd)} (not Few-Step); best Few-Step **{best.method.name}** "
                   f"rank {rank}, FD {fmt(best.fd)}, paired vs #1 {paired(best, winner)}")


def headline(results: Results) -> list[str]:
    """The lines that sum up one model: the target per budget, our best rows, the baseline and the floor."""
    lines = []
    for budget in results.config.budgets:
        table = results.table(budget)
        winner = table[0]
        lines.append(f"NFE {budget}: " + target(results, budget)[1])
        for kind, wanted in (("recipe", lambda m: m.pack and not tuned(m)), ("tuned", tuned)):
            ours = [(i + 1, r) for i, r in enumerate(table) if wanted(r.method)]
            if ours:
                rank, best = ours[0]
                lines.append(f"NFE {budget}: our best {kind} {best.method.name} FD {fmt(best.fd)} (rank {rank} of "
                             f"{len(table)}, {paired(best, winner)} paired vs #1)")
    base = results.baseline()
    lines.append(f"baseline {base.method.name}: NFE {base.method.nfe}, FD {fmt(base.fd)}; "
                 f"exact-sample floor FD {fmt(results.floor.fd)}")
    return lines
