"""The pack's names in ComfyUI's shared lists, and the schedule route: the one module that registers anything.

Only the package's entry point (``__init__.py``) imports it. Registration is idempotent, appends in place
(packs that rebind the shared lists break each other) and leaves other packs' names alone.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

import comfy.k_diffusion.sampling as k_diffusion_sampling
import comfy.samplers

from ..fewstep.plan import solver_named
from .comfy_api import fewstep_scheduler, sample_with_schedule
from .routes import SCHEDULE_PATH, get_schedule

log = logging.getLogger("ComfyUI-FewStep")

# KSampler's sampler names -> solver (solver_names.SCHEDULE_SOLVERS). fewstep_unipc is UniPC as the SD1.5 UniPC
# recipes run it (noise form, bh1, order auto, no analytical first step: KSampler's schedulers do not plan for it).
SAMPLER_NAMES = {"fewstep_dpmpp_1s": "dpmpp_1s", "fewstep_dpmpp_2m": "dpmpp_2m", "fewstep_unipc": "unipc"}
SCHEDULER_NAME = "fewstep"


def _append_once(lists, name: str) -> None:
    """Append ``name`` in place to each distinct list object that lacks it."""
    seen = set()
    for names in lists:
        if names is None or id(names) in seen:
            continue
        seen.add(id(names))
        if name not in names:
            names.append(name)


def _register_pinned_scheduler() -> None:
    """PINNED has a fixed if/elif: wrap the module function once (callers look it up at call time)."""
    if getattr(comfy.samplers, "_fewstep_scheduler_wrapped", False):
        return
    original = comfy.samplers.calculate_sigmas_scheduler

    def calculate_sigmas_scheduler(model, scheduler_name, steps):
        if scheduler_name == SCHEDULER_NAME:
            return fewstep_scheduler(model.model_sampling, steps)
        return original(model, scheduler_name, steps)

    comfy.samplers.calculate_sigmas_scheduler = calculate_sigmas_scheduler
    comfy.samplers._fewstep_scheduler_wrapped = True


def _register_routes() -> None:
    """Serve the schedule preview (routes.py) from a running ComfyUI server, once.

    Both versions read ``PromptServer.instance.routes`` after loading custom nodes (CURRENT serves
    them under /api/ as well). Without a running server (the tests load the pack in process) there
    is nothing to do: a server exists only once main.py has imported ``server``, so it is not imported.
    """
    prompt_server = getattr(sys.modules.get("server"), "PromptServer", None)
    instance = getattr(prompt_server, "instance", None)
    if instance is None:
        return
    routes = instance.routes
    if any(getattr(route, "path", None) == SCHEDULE_PATH for route in routes):
        return
    routes.get(SCHEDULE_PATH)(get_schedule)
    log.debug("serving %s", SCHEDULE_PATH)


def register() -> None:
    """Add our sampler and scheduler names to KSampler's dropdowns and the schedule route; idempotent."""
    samplers = comfy.samplers
    ksampler_class = getattr(samplers, "KSampler", None)
    for name, solver in SAMPLER_NAMES.items():
        setattr(k_diffusion_sampling, "sample_" + name, partial(sample_with_schedule, solver=solver_named(solver)))
        _append_once((getattr(samplers, "KSAMPLER_NAMES", None), samplers.SAMPLER_NAMES,
                      getattr(ksampler_class, "SAMPLERS", None)), name)

    handlers = getattr(samplers, "SCHEDULER_HANDLERS", None)
    if handlers is not None:  # CURRENT
        if SCHEDULER_NAME not in handlers:
            handlers[SCHEDULER_NAME] = samplers.SchedulerHandler(fewstep_scheduler)
    else:  # PINNED
        _register_pinned_scheduler()
    _append_once((samplers.SCHEDULER_NAMES, getattr(ksampler_class, "SCHEDULERS", None)), SCHEDULER_NAME)
    log.debug("registered samplers %s and scheduler %s", list(SAMPLER_NAMES), SCHEDULER_NAME)
    _register_routes()
