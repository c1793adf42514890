"""The paper's recipes: the one place where their numbers live.

A recipe is (N, n, rho, k, time_rho): N model evaluations, a base Karras list of n sigmas with
exponent rho, the schedule ending at the timestep of the k-th base sigma, and N+1 timesteps spaced
with exponent time_rho between the first base sigma and that end (see ``schedule.py``).

The base list and both end points are taken on the standard SD1.x / SDXL training schedule (the
paper's definition), so a recipe is a list of TIMESTEPS: every discrete SD-family model, v-prediction
and zero-terminal SNR included, starts at its own sigma of t = 999 and stops at the recipe's end
timestep (SD1.5 5/6-step and SDXL 6-step: t = 18.3; SD1.5 8-step: 22.7; SDXL 8-step: 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FreeUSetting:
    """FreeU v1 values (b1, b2, s1, s2) and the 1-based schedule steps they are active in."""

    b1: float
    b2: float
    s1: float
    s2: float
    first_step: int
    last_step: int


@dataclass(frozen=True)
class Recipe:
    """One row of the paper's recipe table."""

    name: str
    steps: int  # N, number of model evaluations
    base_steps: int  # n, length of the base Karras list
    base_rho: float  # rho of the base Karras list
    end_index: int  # k, the schedule stops at the timestep of base sigma k
    solver: str  # one of solvers.SCHEDULE_SOLVERS: "dpmpp_1s", "dpmpp_2m", "unipc" or "unipc_afs"
    freeu: tuple[FreeUSetting, ...] = ()
    time_rho: float = 1.2
    resolution: int = 512
    # A tuned recipe (the flow ones) also fixes what a params text can (params.py): the positions of the interior
    # steps in the Karras spacing (None: even, the paper's), the end ("index": the paper's early stop; "0": the last
    # step to sigma 0) and UniPC's variant and order (None: bh1, auto).
    ramp: tuple[float, ...] | None = None
    end: str = "index"
    variant: str | None = None
    order: str | None = None


PAPER_FREEU = (1.1, 1.1, 0.9, 0.2)
# F-scheduler (the paper's v3): FreeU v1 on the last model evaluations of the UniPC recipes. Their solver is
# UniPC bh1 in the noise form with order "auto" (1 up to 6 evaluations, 2 from 7), "unipc_afs" with the
# analytical first step (see unipc.py); steps count model evaluations, with or without AFS.
UNIPC_FREEU = (1.2, 1.2, 0.9, 0.2)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("SD1.5 5-step", 5, 8, 5.0, 6, "dpmpp_1s", (FreeUSetting(*PAPER_FREEU, 1, -1),)),
        Recipe("SD1.5 6-step", 6, 8, 5.0, 6, "dpmpp_1s", (FreeUSetting(*PAPER_FREEU, 1, -1),)),
        Recipe("SD1.5 8-step", 8, 12, 7.0, 9, "dpmpp_2m"),
        # Reference code: step 1 off, steps 2-4 paper values, step 5 off, step 6 (1.3, 1.4, 0.9, 0.2).
        Recipe(
            "SDXL 6-step", 6, 8, 5.0, 6, "dpmpp_1s",
            (FreeUSetting(*PAPER_FREEU, 2, 4), FreeUSetting(1.3, 1.4, 0.9, 0.2, 6, 6)),
            resolution=1024,
        ),
        Recipe("SDXL 8-step", 8, 12, 12.0, 10, "dpmpp_2m", resolution=1024),
        # F-scheduler: the v3 headline (SDXL at 1024 in 6 evaluations) and its UniPC recipes.
        Recipe("SDXL 6-step UniPC", 6, 12, 12.0, 10, "unipc_afs", (FreeUSetting(*UNIPC_FREEU, -3, -1),),
               resolution=1024),
        Recipe("SDXL 8-step UniPC", 8, 12, 12.0, 10, "unipc_afs", (FreeUSetting(*UNIPC_FREEU, -3, -1),),
               resolution=1024),
        Recipe("SD1.5 5-step UniPC", 5, 8, 5.0, 6, "unipc", (FreeUSetting(*UNIPC_FREEU, -2, -1),)),
        Recipe("SD1.5 6-step UniPC", 6, 8, 5.0, 6, "unipc", (FreeUSetting(*UNIPC_FREEU, -2, -1),)),
        Recipe("SD1.5 8-step UniPC", 8, 12, 7.0, 9, "unipc", (FreeUSetting(*UNIPC_FREEU, -2, -1),)),
        # Flow-matching models (SD3 / SD3.5 at shift 3.0; Flux at 1024 x 1024, shift 1.15): the paper has none. Tuned
        # on proxies (2026-12-05) with the pack's tuner (solver and end auto), one schedule per family and NFE for
        # all the family's proxies at once (SD3.5: the three analytic models of the flow benchmark under
        # ModelSamplingDiscreteFlow shift 3.0 and the trained photo_flow; Flux: the three under ModelSamplingFlux
        # shift 1.15), with each proxy tuned alone beside it; of the schedules found, the one with the least mean
        # distance relative to the recipe start over the family. Command, and its output in docs/flow_recipes.md:
        #   COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python benchmarks/flow_recipes.py
        # No FreeU (these are DiTs); the timesteps map through the model's own time axis (model_sigma_table).
        Recipe("SD3.5 5-step", 5, 8, 8.83339, 6, "unipc_afs", time_rho=1.1476, resolution=1024,
               ramp=(0.200624, 0.439035, 0.820945, 0.830933), variant="bh2", order="2"),
        Recipe("SD3.5 6-step", 6, 8, 7.72101, 6, "unipc_afs", time_rho=0.938277, resolution=1024,
               ramp=(0.206226, 0.33431, 0.503296, 0.729689, 0.932375), variant="bh1", order="auto"),
        Recipe("SD3.5 8-step", 8, 12, 4.33669, 10, "unipc_afs", time_rho=1.55779, resolution=1024,
               ramp=(0.107869, 0.251654, 0.342755, 0.432806, 0.602738, 0.869568, 0.889331), variant="bh2",
               order="auto"),
        Recipe("Flux 5-step", 5, 8, 10.4611, 6, "unipc_afs", time_rho=2.94838, resolution=1024,
               ramp=(0.126215, 0.27811, 0.62101, 0.634066), variant="bh2", order="2"),
        Recipe("Flux 6-step", 6, 8, 12.0876, 6, "unipc_afs", time_rho=2.17808, resolution=1024,
               ramp=(0.138249, 0.255504, 0.414609, 0.572169, 0.804129), variant="bh1", order="auto"),
        Recipe("Flux 8-step", 8, 12, 5.07537, 10, "unipc_afs", time_rho=1.67423, resolution=1024,
               ramp=(0.107877, 0.235325, 0.331209, 0.462915, 0.645787, 0.870069, 0.885865), variant="bh2",
               order="auto"),
    )
}

CUSTOM = "custom"
RECIPE_CHOICES = [*RECIPES, CUSTOM]

# Ranges of the custom parameters, shared by the node widgets and the validation.
STEPS_RANGE = (1, 100)
BASE_STEPS_RANGE = (2, 200)
RHO_RANGE = (0.1, 50.0)
END_INDEX_RANGE = (1, 199)
TIME_RHO_RANGE = (0.1, 10.0)
DENOISE_RANGE = (0.01, 1.0)

DEFAULT_CUSTOM = RECIPES["SD1.5 5-step"]


# The ``fewstep`` scheduler's recipe families: SD (SD1.x / SDXL / v / EDM models), and the flow recipes of SD3
# (DiscreteFlow models: SD3 / SD3.5, AuraFlow, Wan ...) and of Flux (ModelSamplingFlux).
SCHEDULER_FAMILIES = {"sd": "SD1.5", "sd3": "SD3.5", "flux": "Flux"}


def recipe_for_step_count(steps: int, family: str = "sd") -> Recipe:
    """The recipe family used by the ``fewstep`` KSampler scheduler, which only knows a step count.

    SD models: up to 7 steps the 5/6-step family (n=8, rho=5, k=6); from 8 steps the SD1.5 8-step family
    (n=12, rho=7, k=9); the SDXL 8-step recipe (rho=12, k=10) is available through FewStepSigmas. Flow models
    (``family`` "sd3" or "flux"): the family's recipe at 5, 6 and 8 steps, exactly (its tuned step positions
    included); at other counts the numbers of its 6-step (below 8) or 8-step recipe with even step positions.
    """
    if family not in SCHEDULER_FAMILIES:
        raise ValueError(f"family = {family!r} is not one of {list(SCHEDULER_FAMILIES)}")
    prefix = SCHEDULER_FAMILIES[family]
    tuned = RECIPES.get(f"{prefix} {steps}-step") if family != "sd" else None
    source = tuned or (RECIPES[f"{prefix} 6-step"] if steps < 8 else RECIPES[f"{prefix} 8-step"])
    return Recipe(f"fewstep {steps}-step", steps, source.base_steps, source.base_rho, source.end_index, source.solver,
                  time_rho=source.time_rho, ramp=tuned.ramp if tuned else None, end=source.end,
                  variant=source.variant, order=source.order)


def check_custom_parameters(steps: int, base_steps: int, base_rho: float, end_index: int,
                            time_rho: float, denoise: float = 1.0) -> str | None:
    """Return a message naming the first bad parameter and its allowed range, or None if all are valid."""
    checks = (
        ("steps", steps, *STEPS_RANGE),
        ("base_steps", base_steps, *BASE_STEPS_RANGE),
        ("base_rho", base_rho, *RHO_RANGE),
        ("end_index", end_index, 1, base_steps - 1),
        ("time_rho", time_rho, *TIME_RHO_RANGE),
        ("denoise", denoise, *DENOISE_RANGE),
    )
    for name, value, low, high in checks:
        if not (low <= value <= high):
            extra = " (it must be below base_steps)" if name == "end_index" else ""
            return f"{name} = {value} is out of range: allowed {low} to {high}{extra}"
    return None
