"""The schedule tuner on a ComfyUI model: guided denoiser, progress, interruption and a result cache.

The search itself is ``fewstep.tuner.tune``. Here it runs as the sampler function of a KSAMPLER inside
ComfyUI's own ``sample_custom``, so the model evaluations it makes are exactly those of sampling:
model loading, conditioning, CFG, LoRAs and model patches included, in both ComfyUI versions.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict

import comfy.sample
import comfy.utils
import torch

from ..fewstep.params import ScheduleParams
from ..fewstep.recipes import recipe_for_step_count
from ..fewstep.tuner import TuneResult, tune
from .comfy_api import (
    check_interrupted,
    discrete_sigma_table,
    empty_latent_for,
    model_sampling_of,
    sample_custom_with,
    sample_with_schedule,
)

log = logging.getLogger("ComfyUI-FewStep")

CACHE_SIZE = 16
PROGRESS_STEPS = 1000
KEY_VERSION = 1  # bump when the search changes, so old results are not served


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


def cache_key(model, positive, negative, cfg, latent_shape, steps, solver, probe_seeds, seed, time_budget):
    """(key, weak references to the objects it names by identity)."""
    fingerprint = _Fingerprint()
    key = (
        KEY_VERSION,
        fingerprint.of(model.model, False),
        str(getattr(model, "patches_uuid", None)),  # weight patches (LoRA): new uuid whenever they change
        fingerprint.of(getattr(model, "model_options", {}), False),
        fingerprint.of(getattr(model, "object_patches", {}), False),
        fingerprint.of(positive, True), fingerprint.of(negative, True),
        float(cfg), tuple(latent_shape), int(steps), solver, int(probe_seeds), int(seed), float(time_budget),
    )
    return key, fingerprint.references()


class TuneCache:
    """The last few tuning results, keyed by all inputs (see ``cache_key``)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self.entries: OrderedDict = OrderedDict()

    def get(self, key, references) -> TuneResult | None:
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

    def put(self, key, references, tuned: TuneResult) -> None:
        self.entries[key] = (references, tuned)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


CACHE = TuneCache()


def tune_on_model(model, positive, negative, cfg: float, latent: torch.Tensor, steps: int, solver: str,
                  probe_seeds: int, seed: int, time_budget: float) -> TuneResult:
    """Tune a ``steps``-evaluation schedule for ``solver`` on ``model`` with these conds (cached)."""
    latent_shape = tuple(latent.shape[1:])
    key, references = cache_key(model, positive, negative, cfg, latent_shape, steps, solver, probe_seeds, seed,
                                time_budget)
    cached = CACHE.get(key, references)
    if cached is not None:
        log.info("Few-Step Schedule Tuner: same inputs as before, returning the cached schedule %s", cached.text)
        return cached

    table = discrete_sigma_table(model_sampling_of(model))
    start = ScheduleParams.from_recipe(recipe_for_step_count(steps))
    empty = empty_latent_for(model, torch.zeros((probe_seeds, *latent_shape), dtype=torch.float32))
    noise = comfy.sample.prepare_noise(empty, seed)
    bar = comfy.utils.ProgressBar(PROGRESS_STEPS)
    outcome: dict[str, TuneResult] = {}

    def progress(fraction: float, best: float) -> None:
        bar.update_absolute(int(fraction * PROGRESS_STEPS), PROGRESS_STEPS)

    def search(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        def denoiser(x_step, sigma, **kwargs):
            check_interrupted()  # between any two model evaluations
            return model_k(x_step, sigma, **kwargs)

        def run(schedule: torch.Tensor, which: str) -> torch.Tensor:
            with torch.no_grad():
                return sample_with_schedule(denoiser, x, schedule.to(x.device), extra_args, None, True,
                                            solver=which, sigma_table=table)

        outcome["result"] = tune(run, table, steps, solver, start=start, time_budget=time_budget,
                                 progress=progress, check_interrupt=check_interrupted)
        return x  # the sampled latent is not used

    sample_custom_with(model, search, noise, cfg, start.sigmas(table), positive, negative, empty, seed)
    result = outcome["result"]
    bar.update_absolute(PROGRESS_STEPS, PROGRESS_STEPS)
    log.info("Few-Step Schedule Tuner: %s (distance %.4g -> %.4g, %d schedules, %d model evaluations, "
             "%.1f s, stopped: %s)", result.text, result.start_objective, result.objective, result.candidates,
             result.model_evaluations, result.seconds, result.stopped_by)
    CACHE.put(key, references, result)  # the node hands out copies of its sigmas
    return result
