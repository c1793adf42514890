"""The schedule tuner on a ComfyUI model: guided denoiser, progress, interruption, a result cache and a
reference cache.

The search itself is ``fewstep.tuner.tune``. Here it runs as the sampler function of a KSAMPLER inside
ComfyUI's own ``sample_custom``, so the model evaluations it makes are exactly those of sampling:
model loading, conditioning, CFG, LoRAs and model patches included, in both ComfyUI versions.

The reference (40 evaluations of DPM++2M to sigma 0 from the probe noises) does not depend on the solver
or step count being tuned: it is computed once per model, conds, cfg, latent size, probe count and
tuning seed and reused (``REFERENCES``) when the same inputs are tuned for another solver (``auto``
included), NFE or ``vae``: it is kept as a latent, and a ``vae`` only changes how it is measured. With
``learn``, the fit takes finer references of its own (LEARN_REFERENCE_STEPS evaluations, on the probes and on
as many held-out noises), cached the same way.
With a ``vae`` the distances compare decoded images (``decoded_measure``: the model's latent out, VAE decode,
area average to at most MEASURE_SIZE pixels a side).
The progress bar counts candidate schedules against the search's cap (``MAX_CANDIDATES``); the
frontend's progress text (CURRENT) and the console line give the best objective so far.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import weakref
from collections import OrderedDict
from dataclasses import replace

import comfy.sample
import comfy.utils
import torch
import torch.nn.functional as F

from ..fewstep.noise_forms import NOISE_FORM_EPS
from ..fewstep.params import END_AT_INDEX, END_AT_ZERO
from ..fewstep.plan import PlanError, steps_plan
from ..fewstep.solver_names import FINISH_LAST_SIGMA
from ..fewstep.tuner import REFERENCE_STEPS, TuneResult, compute_reference, solver_label, tune
from ..fewstep.tuner_learn import LEARN_REFERENCE_STEPS, LEARN_SCHEDULE, learn
from ..fewstep.tuner_objective import as_solver
from .comfy_api import (
    check_interrupted,
    empty_latent_for,
    model_sampling_of,
    model_sigma_table,
    preconditioning_of,
    progress_text,
    sample_custom_with,
    sample_with_schedule,
    scheduler_family,
)

log = logging.getLogger("ComfyUI-FewStep")

CACHE_SIZE = 16
REFERENCE_CACHE_SIZE = 8
# The search stops at this many candidate schedules (or converged, or at the time budget, if sooner); the
# progress bar runs to it. On the analytic models (docs/tuner_search.md) the search removes >= 90 % of what
# the old compass search removed at convergence within 30 candidates in most cases; with the solver or the end
# chosen, the first 60 go to the screened choice, 60 each to the two runners-up (from the starting schedule) and
# the rest to the race of the best choices at the schedule found (fewstep/tuner.py): with the runners-up, `auto`
# reaches 90 % of a long generic search's gain on every trained proxy (docs/tuner.md).
MAX_CANDIDATES = 300
KEY_VERSION = 10  # bump when the search changes, so old results are not served (6: end, solver, vae; 7: race;
# 8: runners-up; 9: learn starts a UniPC schedule from UniPC's own weights where they are closer;
# 10: a named end is kept with solver auto)
MEASURE_SIZE = 64  # with a vae: decoded images area-averaged to at most this many pixels a side
LEARN_SHARE = 0.6  # with learn: the share of the time budget (after the reference) the schedule search may take


class _Fingerprint:
    """A hashable summary of inputs: tensors by content (conds) or by identity (model), objects by identity.

    Objects keyed by identity are remembered through weak references where possible, so an entry whose
    object has died (and whose id may be reused) is never served.
    """

    def __init__(self):
        self.objects: list[object] = []

    def of(self, value, tensors_by_content: bool):
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return value
        if isinstance(value, torch.Tensor) and tensors_by_content:
            data = value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            return ("tensor", tuple(value.shape), str(value.dtype), hashlib.sha256(data).hexdigest())
        if isinstance(value, dict):
            return ("dict", tuple(sorted(((repr(k), self.of(v, tensors_by_content)) for k, v in value.items()))))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(self.of(v, tensors_by_content) for v in value))
        self.objects.append(value)
        return ("object", type(value).__qualname__, id(value))

    def references(self) -> list:
        refs = []
        for obj in self.objects:
            try:
                refs.append(weakref.ref(obj))
            except TypeError:  # builtins and the like: small, keep them
                refs.append(lambda obj=obj: obj)
        return refs


def _inputs_key(fingerprint: _Fingerprint, model, positive, negative, cfg, latent_shape, probe_seeds, seed) -> tuple:
    return (
        fingerprint.of(model.model, False),
        str(getattr(model, "patches_uuid", None)),  # weight patches (LoRA): new uuid whenever they change
        fingerprint.of(getattr(model, "model_options", {}), False),
        fingerprint.of(getattr(model, "object_patches", {}), False),
        fingerprint.of(positive, True), fingerprint.of(negative, True),
        float(cfg), tuple(latent_shape), int(probe_seeds), int(seed),
    )


def cache_key(model, positive, negative, cfg, latent_shape, steps, solver, probe_seeds, seed, time_budget, vae=None,
              learn=LEARN_SCHEDULE):
    """(key, weak references to the objects it names by identity): all inputs, ``solver`` ``auto`` as itself, the
    ``vae`` by identity (None: measured on latents) and ``learn`` (left out when it is ``schedule``)."""
    fingerprint = _Fingerprint()
    inputs = _inputs_key(fingerprint, model, positive, negative, cfg, latent_shape, probe_seeds, seed)
    measured = None if vae is None else ("decoded", MEASURE_SIZE, fingerprint.of(vae, False))
    key = (KEY_VERSION, *inputs, int(steps), solver, float(time_budget), measured)
    if learn != LEARN_SCHEDULE:
        key = (*key, learn)
    return key, fingerprint.references()


def reference_key(model, positive, negative, cfg, latent_shape, probe_seeds, seed):
    """The reference's key: the result key without the solver (``auto`` or one), step count, time budget and
    ``vae``. The reference is a latent that none of them changes (a vae only decodes it to be measured)."""
    fingerprint = _Fingerprint()
    key = ("reference", REFERENCE_STEPS, *_inputs_key(fingerprint, model, positive, negative, cfg, latent_shape,
                                                       probe_seeds, seed))
    return key, fingerprint.references()


class TuneCache:
    """The last few tuning results, keyed by all inputs (see ``cache_key``)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self.entries: OrderedDict = OrderedDict()

    def get(self, key, references):
        entry = self.entries.get(key)
        if entry is None:
            return None
        stored_references, tuned = entry
        alive = [r() for r in stored_references]
        if len(alive) != len(references) or any(a is None or a is not r() for a, r in zip(alive, references)):
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return tuned

    def put(self, key, references, tuned) -> None:
        self.entries[key] = (references, tuned)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


CACHE = TuneCache()
REFERENCES = TuneCache(REFERENCE_CACHE_SIZE)  # reference solutions (probes, C, H, W), on the latent's device


def decoded_measure(vae, model, size: int = MEASURE_SIZE):
    """measure(latent) for ``tune``: the sampler's latent (the model's internal scale) taken out of the model's
    latent space, decoded by ``vae`` and area-averaged to at most ``size`` pixels a side, (B, 3, h, w) float32."""
    latent_out = model.model.process_latent_out

    def measure(latent: torch.Tensor) -> torch.Tensor:
        images = vae.decode(latent_out(latent.detach().float()))
        images = images.reshape(-1, *images.shape[-3:]).movedim(-1, 1).float()  # (B, C, H, W)
        height, width = images.shape[-2:]
        scale = min(1.0, size / max(height, width))
        if scale < 1.0:
            images = F.interpolate(images, size=(max(1, round(height * scale)), max(1, round(width * scale))),
                                   mode="area")
        return images.to(latent.device)
    return measure


def tune_on_model(model, positive, negative, cfg: float, latent: torch.Tensor, steps: int, solver: str,
                  probe_seeds: int, seed: int, time_budget: float, vae=None, learn_mode: str = LEARN_SCHEDULE
                  ) -> TuneResult:
    """Tune a ``steps``-evaluation schedule for ``solver`` (or ``auto``) on ``model`` with these conds (cached);
    with a ``vae`` the distances are measured on decoded images (``decoded_measure``). ``learn_mode`` other than
    ``schedule``: then fit the solver weights (and model times) from the schedule found (``tuner_learn.learn``),
    judged on ``probe_seeds`` more noises (the next ones of the same seed) that the tuning does not use."""
    latent_shape = tuple(latent.shape[1:])
    learning = learn_mode != LEARN_SCHEDULE
    key, references = cache_key(model, positive, negative, cfg, latent_shape, steps, solver, probe_seeds, seed,
                                time_budget, vae, learn_mode)
    cached = CACHE.get(key, references)
    if cached is not None:
        log.info("Few-Step Schedule Tuner: same inputs as before, returning the cached schedule %s", cached.text)
        return cached

    try:
        model_sampling = model_sampling_of(model)
        table, noise_form = model_sigma_table(model_sampling)  # the model's own time axis and noise form
    except PlanError as error:
        raise ValueError(f"Few-Step Schedule Tuner: {error}") from None
    try:  # the search starts from the ``fewstep`` scheduler's recipe family for this kind of model
        start = steps_plan(steps, table, scheduler_family(model_sampling, noise_form))
    except PlanError as error:
        raise ValueError(f"Few-Step Schedule Tuner: nfe = {steps} gives a starting schedule that cannot be sampled on "
                         f"this model: {error}") from None
    preconditioning = preconditioning_of(model_sampling_of(model))  # for a model time (the denoiser is no model)
    # with learning, the held-out noises follow the probes in one batch of the same seed: the probes stay the same
    noises = probe_seeds * (2 if learning else 1)
    empty = empty_latent_for(model, torch.zeros((noises, *latent_shape), dtype=torch.float32))
    noise = comfy.sample.prepare_noise(empty, seed)
    ref_key, ref_references = reference_key(model, positive, negative, cfg, latent_shape, probe_seeds, seed)
    bar = comfy.utils.ProgressBar(MAX_CANDIDATES)
    outcome: dict[str, object] = {}
    first: list[float] = []

    def progress(candidates: int, best: float) -> None:
        if not first:
            first.append(best)  # the first candidate is the starting recipe
        bar.update_absolute(min(candidates, MAX_CANDIDATES), MAX_CANDIDATES)
        progress_text(f"schedule {candidates} of at most {MAX_CANDIDATES}: best distance {best:.4g} "
                      f"({_removed(first[0], best)} of the start's removed)")

    def search(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        def denoiser(x_step, sigma, **kwargs):
            check_interrupted()  # between any two model evaluations
            return model_k(x_step, sigma, **kwargs)

        def run_from(x_start: torch.Tensor):
            return lambda schedule, which: run(schedule, which, x_start)

        def run(schedule: torch.Tensor, which: str, x_start: torch.Tensor | None = None) -> torch.Tensor:
            solver = replace(as_solver(which), noise_form=noise_form)  # the denoiser is no ComfyUI model to read it off
            x_start = x[:probe_seeds] if x_start is None else x_start
            with torch.no_grad():
                latent = sample_with_schedule(denoiser, x_start, schedule.to(x.device), extra_args, None, True,
                                              solver=solver, sigma_table=table, preconditioning=preconditioning)
            # what a sampler hands back through ComfyUI: a flow model's latent at sigma > 0 divided by 1 - sigma
            # (inverse_noise_scaling), so a schedule ending above 0 is measured as the node's output is
            return latent if noise_form == NOISE_FORM_EPS or solver.finish != FINISH_LAST_SIGMA else (
                latent / (1.0 - float(schedule[-1])))

        began = time.monotonic()
        reference = REFERENCES.get(ref_key, ref_references)
        outcome["reused"] = reference is not None
        if reference is None:
            reference = compute_reference(run, table)
            REFERENCES.put(ref_key, ref_references, reference)
        outcome["reference_seconds"] = time.monotonic() - began
        if learning:  # the fit's references first: the search and the fit share what is left
            held_out_run = run_from(x[probe_seeds:])  # the fit runs on the search's probes (``run``)
            fit_references, outcome["fit_reference_cost"] = _fit_references(run, held_out_run,
                                                                            (ref_key, ref_references), table,
                                                                            learn_mode)
        spent = time.monotonic() - began
        outcome["fit_reference_seconds"] = spent - outcome["reference_seconds"]
        measure = None if vae is None else decoded_measure(vae, model)
        share = LEARN_SHARE if learning else 1.0
        outcome["result"] = tune(run, table, steps, solver, start=start.schedule,
                                 time_budget=max(share * (time_budget - spent), 0.0),
                                 max_candidates=MAX_CANDIDATES, progress=progress, check_interrupt=check_interrupted,
                                 reference=reference.to(x.device), measure=measure)
        if learning:
            tuned = outcome["result"]
            progress_text(f"learning {learn_mode} from {tuned.text}")
            fit_reference, held_out_reference = (r.to(x.device) for r in fit_references)  # cached: as the search's
            outcome["learned"] = learn(run, fit_reference, held_out_run, held_out_reference, table,
                                       tuned.params, learn_mode, measure=measure,
                                       time_budget=max(time_budget - (time.monotonic() - began), 0.0),
                                       check_interrupt=check_interrupted)
        return x  # the sampled latent is not used

    sample_custom_with(model, search, noise, cfg, start.sigmas, positive, negative, empty, seed)
    result: TuneResult = outcome["result"]
    reference_cost = 0 if outcome["reused"] else REFERENCE_STEPS
    result = replace(result, model_evaluations=result.model_evaluations + reference_cost,
                     seconds=result.seconds + outcome["reference_seconds"])
    if learning:
        learned, references_cost = outcome["learned"], outcome["fit_reference_cost"]
        result = replace(result, params=learned.params, text=learned.text,
                         objective=learned.tuning[1] if learned.learned else result.objective,
                         model_evaluations=result.model_evaluations + references_cost + learned.evaluations,
                         seconds=result.seconds + outcome["fit_reference_seconds"] + learned.seconds,
                         learned=learned.reason)
        progress_text(learned.reason)
    bar.update_absolute(MAX_CANDIDATES, MAX_CANDIDATES)
    log.info("Few-Step Schedule Tuner: %s (%d candidate schedules, removed %s of the starting distance: %.4g -> "
             "%.4g, measured on %s; best with the early stop %.4g, ending at 0 %.4g; solver %s; %d model "
             "evaluations, reference %s; %.1f s, stopped: %s)", result.text, result.candidates,
             _removed(result.start_objective, result.objective), result.start_objective, result.objective,
             "latents" if vae is None else "decoded images", result.ends.get(END_AT_INDEX, math.inf),
             result.ends.get(END_AT_ZERO, math.inf), solver_label(result.params), result.model_evaluations,
             "reused" if outcome["reused"] else "computed", result.seconds, result.stopped_by)
    if learning:
        log.info("Few-Step Schedule Tuner, learn %s: %s; %d model evaluations in all, %.1f s", learn_mode,
                 result.learned, result.model_evaluations, result.seconds)
    CACHE.put(key, references, result)  # the node hands out copies of its sigmas
    return result


def _fit_references(run, held_out_run, key, table, learn_mode: str) -> tuple[list, int]:
    """([the fit's reference on the probes, on the held-out noises], their evaluations: 0 for one reused): each
    LEARN_REFERENCE_STEPS evaluations of DPM++2M, finer than the search's, cached beside its reference."""
    cost, references = 0, []
    for which, name in ((run, "fit"), (held_out_run, "held out")):
        reference_key = (*key[0], name, LEARN_REFERENCE_STEPS)
        reference = REFERENCES.get(reference_key, key[1])
        if reference is None:
            progress_text(f"learning {learn_mode}: the {name} reference, {LEARN_REFERENCE_STEPS} evaluations")
            reference = compute_reference(which, table, LEARN_REFERENCE_STEPS)
            REFERENCES.put(reference_key, key[1], reference)
            cost += LEARN_REFERENCE_STEPS
        references.append(reference)
    return references, cost


def _removed(start: float, best: float) -> str:
    """The share of the starting objective removed, as a percentage."""
    return f"{100.0 * (start - best) / start:.0f} %" if start > 0 and math.isfinite(start) else "n/a"
