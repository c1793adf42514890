"""The quality benchmark's methods: ComfyUI under test, and every sampler + schedule it compares.

A method is one sampler and schedule at one step count whose model evaluations (NFE) are counted on the
analytic model, not assumed: core samplers with core schedulers (KSampler's own sigmas, AYS / GITS nodes),
the pack's recipes through its nodes, and schedules the pack's tuner finds per model, budget and solver.
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from quality_models import LATENT_SHAPE, AnalyticDenoiser

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("quality")

BASELINE = ("dpmpp_2m", "karras", 20)
# The pack's sampler names; core samplers and schedulers are everything else in ComfyUI's lists.
PACK_SAMPLERS = {"fewstep_dpmpp_1s", "fewstep_dpmpp_2m", "fewstep_unipc"}
PACK_SCHEDULERS = {"fewstep"}
# Samplers that stop at the last non-zero sigma of a schedule ending in 0 (DPM-Solver's own grid).
STOP_AT_LAST_NONZERO = {"dpm_fast"}
UNI_PC_END = 0.001  # uni_pc replaces a final sigma of 0 by this value
EXCLUDED = {
    "dpm_adaptive": "adaptive step size: its NFE is set by tolerances, not by steps",
    "ddim": "in ComfyUI an alias of euler (it only differs when inpainting)",
}
CFG_PP_REASON = "CFG++ variant: needs a separate unconditional prediction; without guidance it is its base sampler"


def load_comfyui() -> SimpleNamespace:
    """Import the ComfyUI under test (COMFYUI_PATH or PINNED) and load the pack, unless already loaded."""
    sys.path.insert(0, str(REPO / "scripts"))
    from comfyui_runtime import comfyui_label, import_comfy, load_pack

    path = import_comfy()
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # after ComfyUI: its `nodes` module, not the pack's folder
    import comfy.k_diffusion.sampling
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models

    import nodes

    pack = load_pack()
    label = comfyui_label(path)
    extras = {}
    for module_name, class_name in (("nodes_align_your_steps", "AlignYourStepsScheduler"),
                                    ("nodes_gits", "GITSScheduler")):
        try:
            module = __import__(f"comfy_extras.{module_name}", fromlist=[class_name])
            extras[class_name] = getattr(module, class_name)
        except Exception:  # noqa: BLE001  (absent in PINNED)
            pass
    model_sampling = comfy.model_base.model_sampling(comfy.supported_models.SD15({}), comfy.model_base.ModelType.EPS)
    return SimpleNamespace(path=path, label=label, samplers=comfy.samplers, nodes=nodes, extras=extras, pack=pack,
                           model_sampling=model_sampling,
                           current=hasattr(comfy.samplers, "SCHEDULER_HANDLERS"))


def node_output(result):
    """A node's first output, for classic (tuple) and V3 (NodeOutput) nodes."""
    result = getattr(result, "result", result)
    return result[0]


@dataclass
class Method:
    """One sampler + schedule at one step count; ``nfe`` is counted, not assumed."""

    name: str
    family: str
    sampler: str
    scheduler: str
    steps: int
    sigmas: torch.Tensor
    make_sampler: object  # () -> KSAMPLER
    sigma_end: float  # where the returned latent lives
    budget: int | None = None  # the NFE budget it competes at (None: baseline / off budget)
    pack: bool = False
    nfe: int | None = None
    solver: str = ""  # the pack's solver (SCHEDULE_SOLVERS) for the pack's rows

    def __getstate__(self) -> dict:
        """Pickled (a model's results sent back from a worker process), a method keeps its data, not its sampler."""
        return {**self.__dict__, "make_sampler": None}


@dataclass
class Config:
    """What a run compares and how much: budgets, seeds, samples, models, methods, tuning and the ceiling."""

    # 5, 6, 8 ranked against every core pair; 10 and 12 show the trend: there the pack's rows, the tuned ones and
    # the TREND_CORE best core pairs of the last ranked budget (every pair at 10 and 12 would double the run time)
    budgets: tuple[int, ...] = (5, 6, 8, 10, 12)
    ranked_budgets: tuple[int, ...] = (5, 6, 8)
    trend_core: int = 5
    # Reduced from 5 x 2048 (one model) when the third model came: on the shared 2-core machine one seed of
    # 2048 samples of ComfyUI 0.3.64's 480 rows took 5 min.
    seeds: int = 3
    samples: int = 1024
    reference_steps: int = 100
    models: tuple[str, ...] = ("anisotropic", "clustered", "spheres", "photo_eps", "photo_v_zsnr", "digits_cond_cfg1",
                               "digits_cond_cfg5")  # keys of MODELS or of the trained proxies
    samplers: tuple[str, ...] | None = None  # None: every core sampler
    schedulers: tuple[str, ...] | None = None  # None: every core scheduler (+ AYS, GITS)
    mixture_seed: int = 0
    threads: int = 1  # more threads make small float64 eigen-solves far slower on a busy machine
    tuned: bool = True  # tune a schedule per budget and solver and report it like any method
    # "auto": the tuner node's default (it chooses the solver and the end); two fixed solvers beside it
    tune_solvers: tuple[str, ...] = ("auto", "dpmpp_2m", "unipc")
    tune_probes: int = 128  # probe noises (seed TUNE_SEED + budget: disjoint from the evaluation seeds)
    tune_seconds: float = 120.0  # time budget of each tuning run (the node's default)
    tune_candidates: int | None = 300  # cap on schedules per tuning run, the tuner node's (None: until converged)
    # at the trend budgets (not ranked, no ceiling, no learned fit) a shorter search: their rows show the trend; on
    # the trained models the five budgets' searches were about a quarter of the run, 10 and 12 half of that
    trend_candidates: int | None = 100
    ceiling_budgets: tuple[int, ...] = (5, 6, 8)
    ceiling_evaluations: int = 1000  # distinct schedules of the ceiling search (0: no ceiling rows)
    # The tuner's `learn` (fewstep/tuner_learn.py) from the best tuned schedule of each of these budgets, one row per
    # mode the held-out check keeps; fitted on the tuning probes (trained models: trained_learn_probes), judged on as
    # many other noises (seed HELD_OUT_SEED + budget), then measured on the evaluation noises like every row.
    learn_budgets: tuple[int, ...] = (5, 6, 8)
    learn_modes: tuple[str, ...] = ("schedule+weights", "schedule+weights+model time")
    learn_seconds: float = 30.0  # the fit's time budget per mode (the schedule search before it has tune_seconds)
    learn_runs: int | None = None  # the fit's budget in runs on its probes (None: the time budget alone)
    # (budget, probes, runs): a larger fit at these budgets than learn probes / learn_runs give (trained_learn_larger)
    learn_larger: tuple[tuple[int, int, int], ...] = ()
    # Trained networks cost far more per evaluation than the analytic models: fewer samples, a screen of the core
    # pairs on a small batch (the best trained_keep per budget by RMS to the reference are ranked in full), and
    # fewer probes for tuning and the ceiling (the tuner node's default is 4).
    trained_seeds: int = 2
    # the network's convolutions (not the float64 eigen-solves) run about 1.6x faster on 2 threads than on 1 (batch
    # 16 and 256 on the proxies' UNet, on the 2-core machine): the trained models' sampling runs on this many
    trained_threads: int = 2
    trained_samples: int = 256
    trained_reference_steps: int = 100  # DPM++2M Karras to 0; checked against twice as many on seed 0
    trained_screen: int = 32
    trained_keep: int = 8
    trained_trend_core: int = 3
    trained_tune_probes: int = 16
    trained_tune_solvers: tuple[str, ...] = ("auto",)
    # 16 probes are too few for 16-40 fitted numbers; 64 generalise better than 32 (held out, photo_eps and
    # digits_cond_cfg5, 2026-12-05) and cost no time (the fit has a time budget; fewer runs in it at 8 evaluations)
    trained_learn_probes: int = 64
    # one learned fit per budget on the trained models, the model-time one (it fits the weights too): the weights-only
    # fits took 283 of the 2102 s of a run alone (PINNED, 2026-12-05) and were the better row in few cells; fitting
    # the weights first and the model times from there instead lost photo_eps's 2.69x at 6 and 2.01x at 8 (2.32x,
    # 1.72x; docs/learned.md)
    trained_learn_modes: tuple[str, ...] = ("schedule+weights+model time",)
    # the trained models' fits have a budget in runs, not seconds, so that a fit does not depend on the machine's
    # speed or on the other worker beside it: 240 runs, what 30 s gave at NFE 5 and 6 on 2 threads alone (122-200 at
    # NFE 8, 2026-12-05); the time budget only guards against a far slower machine
    trained_learn_runs: int = 240
    trained_learn_seconds: float = 240.0
    # a larger fit at some budgets, (budget, probes, runs) (`--learn-larger 8,128,400`): none by default. 128 probes
    # and 400 runs at NFE 8 took digits_cond_cfg1 / _cfg5 from 1.80x / 1.94x to 2.14x / 2.14x in benchmarks/learned.py,
    # but not in this benchmark (PINNED 2026-12-06: 1.69x -> 1.52x, 1.91x -> 1.89x; docs/learned.md); the time budget
    # of such a fit is trained_learn_seconds * runs / trained_learn_runs
    trained_learn_larger: tuple[tuple[int, int, int], ...] = ()
    # models run in this many worker processes at once, each on 1 torch thread (1: one after another in this process,
    # the analytic ones on `threads`, the trained ones on `trained_threads`); on 2 cores two workers of 1 thread take
    # about 3/4 of one process's time: the analytic models' float64 work is single-threaded, and a trained network
    # runs only about 1.6x faster on 2 threads than on 1
    workers: int = 2
    speedup: bool = True  # DPM++2M Karras (and the best core pairs) up to 40 steps: the speed-up table
    sweep: tuple[str, str] = ("dpmpp_2m", "karras")  # the speed-up's yardstick (sampler, scheduler) ...
    sweep_label: str = "DPM++2M Karras"  # ... and its name in the report
    baseline: tuple[str, str, int] = BASELINE  # the reference row: sampler, scheduler, steps
    speedup_pairs: int = 3  # core pairs searched beside DPM++2M Karras at step counts outside the budgets
    trained_speedup_pairs: int = 1


TUNE_SEED = 7000  # probe noises for tuning; the evaluation uses seeds 1000 + i
LEARN_SEED = 7500  # the learned fit's probes beyond the tuning probes (trained models)
HELD_OUT_SEED = 7700  # the learned fit's held-out check
SCREEN_SEED = 900  # the trained models' screen of the core pairs

QUICK = Config(budgets=(5, 6, 8), seeds=1, samples=384, reference_steps=80, tune_solvers=("dpmpp_2m", "unipc_afs"),
               tune_probes=32, tune_candidates=40, models=("anisotropic", "clustered", "spheres"),
               ceiling_evaluations=0, speedup=False, learn_budgets=(5,), learn_seconds=5.0, workers=1,
               samplers=("euler", "heun", "dpmpp_2m"), schedulers=("karras", "normal"))


class Harness:
    """ComfyUI + the analytic model: builds schedules and runs KSAMPLER.sample, counting evaluations."""

    def __init__(self, comfy: SimpleNamespace, mixture, model_sampling=None):
        self.comfy = comfy
        self.ms = model_sampling if model_sampling is not None else comfy.model_sampling
        self.use(mixture)
        self.fake_patcher = SimpleNamespace(model_sampling=self.ms, object_patches={"model_sampling": self.ms},
                                            get_model_object=lambda name: {"model_sampling": self.ms}[name])
        inpaint = comfy.samplers.KSamplerX0Inpaint
        forward = getattr(inpaint, "forward", None) or inpaint.__call__
        self.wants_cond = "cond" in inspect.signature(forward).parameters  # PINNED passes cond/uncond/cond_scale

    def use(self, mixture) -> None:
        """Sample the analytic model ``mixture`` from now on (schedules and NFE do not depend on it)."""
        self.mixture = mixture
        self.model = AnalyticDenoiser(mixture, self.ms)

    def extra_args(self, seed: int) -> dict:
        """The extra_args KSAMPLER.sample passes to the model (cond arguments where PINNED wants them)."""
        extra = {"model_options": {}, "seed": seed}
        if self.wants_cond:
            extra.update(cond=None, uncond=None, cond_scale=1.0)
        return extra

    def sample(self, method_sampler, sigmas: torch.Tensor, noise: torch.Tensor, seed: int = 0):
        """(latent, model evaluations) of one KSAMPLER.sample run from ``noise``."""
        self.model.calls = 0
        latent = torch.zeros_like(noise)
        with torch.no_grad():
            out = method_sampler.sample(self.model, sigmas.clone(), self.extra_args(seed), None, noise, latent,
                                        None, True)
        return out, self.model.calls

    def start(self, method: Method, noise: torch.Tensor) -> tuple[torch.Tensor, tuple[float, bool]]:
        """The latent KSAMPLER starts from (ComfyUI's own noise scaling) in float64, and a key for it."""
        max_denoise = bool(method.make_sampler().max_denoise(self.model, method.sigmas))
        sigma = method.sigmas[0].double()
        x = self.ms.noise_scaling(sigma, noise.double(), torch.zeros_like(noise, dtype=torch.float64), max_denoise)
        return x, (float(sigma), max_denoise)

    # ---- schedules --------------------------------------------------------------------------
    def ksampler_sigmas(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        """The sigmas ComfyUI's KSampler uses (including its discard-penultimate rule)."""
        ksampler = self.comfy.samplers.KSampler(self.fake_patcher, steps, "cpu", sampler=sampler,
                                                scheduler=scheduler, denoise=1.0)
        return ksampler.sigmas.cpu().float()

    def extra_sigmas(self, scheduler: str, steps: int) -> torch.Tensor:
        """AYS (SD1 levels) and GITS (coeff 1.20) through their core nodes, as SamplerCustom uses them."""
        node = self.comfy.extras[scheduler]
        if scheduler == "AlignYourStepsScheduler":
            return node_output(node().get_sigmas("SD1", steps, 1.0)).float()
        return node_output(node.execute(1.20, steps, 1.0)).float()

    def pack_sigmas(self, recipe: str, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2, params=""):
        """The sigmas of Few-Step Sigmas for a recipe, or for custom numbers or a params text."""
        node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]()
        return node_output(node.get_sigmas(self.fake_patcher, recipe, 1.0, steps, base_steps, base_rho,
                                           end_index, time_rho, params=params)).float()

    def pack_sampler(self, solver: str, finish: str, variant: str | None = None, order: str | None = None,
                     params: str = ""):
        """The pack's sampler as a user wires it: UniPC through Few-Step UniPC Sampler (order auto, bh1, noise
        form, afs on for "unipc_afs", as the UniPC recipes say), DPM++ by its KSampler name or, with
        finish = denoised or learned ``params`` (weights, model times), through Few-Step DPM++ Sampler."""
        if solver in ("unipc", "unipc_afs"):
            node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepUniPCSampler"]()
            return node_output(node.get_sampler(order or "auto", variant or "bh1", solver == "unipc_afs", finish))
        if finish == "last_sigma" and not params:  # the registered KSampler names
            return self.comfy.samplers.sampler_object(f"fewstep_{solver}")
        node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepDPMPPSampler"]()
        return node_output(node.get_sampler(solver, finish, params=params))

    # ---- method lists ------------------------------------------------------------------------
    def core_samplers(self, wanted) -> tuple[list[str], dict[str, str]]:
        """Deterministic core samplers to compare, and the reason each other one is left out."""
        names = [n for n in self.comfy.samplers.SAMPLER_NAMES if n not in PACK_SAMPLERS]
        skipped = {}
        chosen = []
        for name in names:
            if wanted is not None and name not in wanted:
                continue
            if name in EXCLUDED:
                skipped[name] = EXCLUDED[name]
            elif name.endswith("_cfg_pp"):
                skipped[name] = CFG_PP_REASON
            else:
                reason = self.stochastic_or_broken(name)
                if reason:
                    skipped[name] = reason
                else:
                    chosen.append(name)
        return chosen, skipped

    def stochastic_or_broken(self, name: str) -> str | None:
        """Run a sampler twice from the same noise with different seeds: a different result means it
        injects noise (ancestral / SDE), so it does not solve the probability-flow ODE."""
        sigmas = self.ksampler_sigmas(name, "karras", 4)
        noise = torch.randn((2, *LATENT_SHAPE), generator=torch.Generator().manual_seed(5))
        try:
            outputs = []
            for seed in (1, 2):
                torch.manual_seed(100 + seed)
                outputs.append(self.sample(self.comfy.samplers.sampler_object(name), sigmas, noise, seed)[0])
        except Exception as error:  # noqa: BLE001
            return f"fails on the analytic model: {type(error).__name__}: {error}"
        if not torch.equal(outputs[0], outputs[1]):
            return "stochastic (injects noise: ancestral / SDE); the proxy compares deterministic ODE solutions"
        return None

    def core_schedulers(self, wanted) -> list[str]:
        """Core schedulers to compare (the pack's left out; AYS and GITS where ComfyUI has them)."""
        names = [n for n in self.comfy.samplers.SCHEDULER_NAMES if n not in PACK_SCHEDULERS]
        names += list(self.comfy.extras)
        return [n for n in names if wanted is None or n in wanted]

    def core_sigmas(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        """A core scheduler's sigmas: AYS / GITS through their nodes, the rest through KSampler."""
        if scheduler in self.comfy.extras:
            return self.extra_sigmas(scheduler, steps)
        return self.ksampler_sigmas(sampler, scheduler, steps)

    def probe_nfe(self, make_sampler, sigmas: torch.Tensor) -> int:
        """Model evaluations one sampling run makes on these sigmas, counted on a probe noise."""
        noise = torch.randn((1, *LATENT_SHAPE), generator=torch.Generator().manual_seed(3))
        return self.sample(make_sampler(), sigmas, noise)[1]

    def core_method(self, sampler: str, scheduler: str, budget: int) -> Method | str:
        """The most steps whose counted NFE fits the budget, or the reason there is none."""
        make = partial(self.comfy.samplers.sampler_object, sampler)
        last_error = "too many evaluations"
        for steps in range(budget, 0, -1):
            try:
                sigmas = self.core_sigmas(sampler, scheduler, steps)
                nfe = self.probe_nfe(make, sigmas)
            except Exception as error:  # noqa: BLE001
                last_error = f"{type(error).__name__}: {error}"
                continue
            if nfe <= budget:
                return Method(f"{sampler} / {short(scheduler)}", sampler, sampler, short(scheduler), steps, sigmas,
                              make, end_sigma(sampler, sigmas), budget, nfe=nfe)
        return f"no step count fits NFE <= {budget} ({last_error})"

    def pack_methods(self, budgets) -> list[Method]:
        """The recipes (identical schedules merged) with finish=last_sigma at NFE N and finish=denoised at N+1,
        and the pack's step-count family + denoised where a budget has no named recipe at N-1."""
        from fewstep.recipes import RECIPES, recipe_for_step_count

        groups: dict[tuple, list[str]] = {}
        for name, r in RECIPES.items():
            groups.setdefault((r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho, r.solver, r.ramp, r.end,
                               r.variant, r.order), []).append(name)
        methods = []
        for names in groups.values():
            recipe = RECIPES[names[0]]
            label = "/".join(n.split()[0] for n in names) + " " + " ".join(names[0].split()[1:])
            sigmas = self.pack_sigmas(names[0])
            for finish in ("last_sigma", "denoised")[:1 if recipe.end == "0" else 2]:  # end 0: already at sigma 0
                nfe = recipe.steps + (finish == "denoised")
                methods.append(self._pack_method(f"FewStep {label}", recipe.solver, finish, recipe.steps, sigmas,
                                                 nfe if nfe in budgets else None, recipe.variant, recipe.order))
        covered = {m.nfe for m in methods if m.budget is not None and m.family == "FewStep + denoised"}
        for budget in budgets:
            if budget not in covered and budget >= 2:
                r = recipe_for_step_count(budget - 1)
                sigmas = self.pack_sigmas("custom", r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho)
                methods.append(self._pack_method(f"FewStep scheduler {r.steps}-step", r.solver, "denoised",
                                                 r.steps, sigmas, budget))
        return methods

    def analytic_denoiser(self, noise: torch.Tensor, work):
        """``work(denoiser, x_start)`` with the analytic model and the noise scaled for sigma_max as KSAMPLER scales it
        (the trained models' ``TrainedTarget.with_denoiser`` does the same inside ComfyUI's sample_custom)."""
        sigma_max = self.ms.sigma_max.double()
        x_start = self.ms.noise_scaling(sigma_max, noise.double(), torch.zeros_like(noise, dtype=torch.float64),
                                        True).float()
        return work(self.model, x_start)

    def tuning_table(self) -> torch.Tensor:
        """The sigma table the tuner reads its schedules on: a discrete model's own."""
        return self.ms.sigmas.double().cpu()

    def tuning_run(self, denoiser, x_start: torch.Tensor, table: torch.Tensor, learned: bool = False):
        """The tuner's run(sigmas, solver) from ``x_start`` on this model (``fewstep.tuner.denoiser_run``); with
        ``learned`` it realises a model time with this model's own preconditioning, read off its model_sampling as
        the tuner node reads it (``nodes/comfy_api.preconditioning_of``)."""
        from fewstep.tuner import denoiser_run

        preconditioning = self.comfy.pack.nodes.comfy_api.preconditioning_of(self.ms) if learned else None
        return denoiser_run(denoiser, x_start, sigma_table=table, preconditioning=preconditioning)

    def params_method(self, label: str, text: str, budget: int) -> Method:
        """A params text through Few-Step Sigmas and the pack's sampler for its solver (variant and order too)."""
        from fewstep.params import parse_params

        params = parse_params(text)
        sigmas = self.pack_sigmas("custom", params=text)
        return self._pack_method(label, params.solver, "last_sigma", budget, sigmas, budget, variant=params.variant,
                                 order=params.order, params=text if params.sets_solver_fields else "")

    def _pack_method(self, label, solver, finish, steps, sigmas, budget, variant=None, order=None,
                     params="") -> Method:
        denoised = finish == "denoised"
        unipc = " UniPC" if solver.startswith("unipc") else ""
        method = Method(label + (" + denoised" if denoised else ""),
                        f"FewStep{unipc} + denoised" if denoised else f"FewStep{unipc} (last sigma)",
                        f"fewstep_{solver}" + (" +denoised" if denoised else ""), "FewStep recipe", steps, sigmas,
                        lambda: self.pack_sampler(solver, finish, variant, order, params),
                        0.0 if denoised else float(sigmas[-1]),
                        budget, pack=True, solver=solver)
        method.nfe = self.probe_nfe(method.make_sampler, sigmas)
        return method


def short(scheduler: str) -> str:
    """The name a table shows for a scheduler."""
    return {"AlignYourStepsScheduler": "AYS (SD1)", "GITSScheduler": "GITS (1.20)"}.get(scheduler, scheduler)


def end_sigma(sampler: str, sigmas: torch.Tensor) -> float:
    """The noise level of the latent a sampler returns for this schedule."""
    if float(sigmas[-1]) == 0.0:
        if sampler in STOP_AT_LAST_NONZERO:
            return float(sigmas[-2])
        if sampler.startswith("uni_pc"):
            return UNI_PC_END
    return float(sigmas[-1])


def plan(harness: Harness, config: Config) -> tuple[list[Method], dict[str, str], dict[str, str]]:
    """Every method but the tuned ones (which are tuned per model): their schedules and counted NFE."""
    samplers, skipped = harness.core_samplers(config.samplers)
    schedulers = harness.core_schedulers(config.schedulers)
    methods, unfit = [], {}
    for budget in config.budgets:
        for sampler in samplers:
            for scheduler in schedulers:
                method = harness.core_method(sampler, scheduler, budget)
                if isinstance(method, str):
                    unfit[f"{sampler} / {short(scheduler)} @ {budget}"] = method
                else:
                    methods.append(method)
    methods += harness.pack_methods(config.budgets)
    sampler, scheduler, steps = config.baseline
    sigmas = harness.ksampler_sigmas(sampler, scheduler, steps)
    make = partial(harness.comfy.samplers.sampler_object, sampler)
    methods.append(Method(f"{sampler} / {scheduler}, {steps} steps (baseline)", "baseline", sampler, scheduler,
                          steps, sigmas, make, end_sigma(sampler, sigmas), None,
                          nfe=harness.probe_nfe(make, sigmas)))
    return methods, skipped, unfit
