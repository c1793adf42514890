"""The paper's early-stopping "custom time schedule" (RECIPES.md, "The schedule").

The schedule is defined in TIMESTEP space on the standard SD1.x / SDXL training schedule
(``standard_sigma_table``): it starts at t = 999 and ends at the timestep of base sigma k of a
Karras list between that schedule's sigma_min and sigma_max, as the paper defines it. Those
timesteps are then read on the model's own table of discrete sigmas (``sigma_table[t]`` for the
training timesteps t = 0..999, non-decreasing), so a patched, v-prediction or zero-terminal-SNR
model gets the same timesteps: its own first sigma (t = 999) and the recipe's end timestep.
Maths is done in float64 and the schedule is returned in float32, as ComfyUI's schedulers return it.
"""

from __future__ import annotations

import math

import torch

from .recipes import Recipe


def standard_sigma_table(timesteps: int = 1000) -> torch.Tensor:
    """Sigmas of the discrete VP schedule used by SD1.x and SDXL ("scaled linear" betas)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


TRAINING_TIMESTEPS = 1000
STANDARD_TABLE = standard_sigma_table(TRAINING_TIMESTEPS)  # the paper's schedule; read-only, shared


def flow_sigma_table(shift: float, timesteps: int = TRAINING_TIMESTEPS) -> torch.Tensor:
    """A flow model's sigmas on its unshifted time t = (i + 1) / T (docs/noise_forms.md): sigma(t) = shift t /
    (1 + (shift - 1) t), SD3's DiscreteFlow; Flux's e^mu / (e^mu + 1/t - 1) is the same with shift = e^mu."""
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
    return shift * t / (1.0 + (shift - 1.0) * t)


def flow_shift(sigma_table: torch.Tensor) -> float | None:
    """The shift of a flow table (``flow_sigma_table``'s inverse: at t = 1/2, sigma = shift / (1 + shift)), or None
    when the table is not of that form (6 significant digits: what the graph shows)."""
    sigma = float(sigma_table[len(sigma_table) // 2 - 1])  # entry i is t = (i + 1) / T
    if not 0.0 < sigma < 1.0:
        return None
    shift = sigma / (1.0 - sigma)
    expected = flow_sigma_table(shift, len(sigma_table))
    if not torch.allclose(sigma_table.to(torch.float64), expected, rtol=1e-5, atol=0.0):
        return None
    return float(f"{shift:.6g}")


# Each step must lower sigma by at least 0.01 % (log-sigma h >= 1e-4), or it does not count in
# float32, the precision of ComfyUI's SIGMAS (2^-24 = 6e-8 relative per value): (1) the solvers use
# the step's size h = log(s / s') from two float32 values, so below 1e-4 it is off by more than
# 0.1 %, and equal values make DPM++2M divide by zero; (2) DPM++2M's correction after such a step
# multiplies the difference of two model outputs by h / (2 h_prev): for the largest step a schedule
# can follow it with (h ~ 3) that is 15000x, bringing float32 rounding of the outputs to 1e-3;
# (3) ComfyUI gives the model its timestep rounded to an integer, so the model hardly tells the
# two sigmas apart and the evaluation is wasted. The densest schedule the node's ranges allow on
# purpose (100 steps over log(14.6 / 0.029) = 6.2) averages h = 0.06, 600 times the limit.
MIN_LOG_STEP = 1e-4


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """n sigmas from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (Karras et al.)."""
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def continuous_timestep(sigma: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """Fractional timestep of each sigma: linear interpolation in log-sigma between table entries."""
    log_table = sigma_table.to(torch.float64).log()
    log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
    log_sigma = log_sigma.clamp(log_table[0], log_table[-1])
    low = (torch.searchsorted(log_table, log_sigma, right=True) - 1).clamp(0, len(log_table) - 2)
    fraction = (log_sigma - log_table[low]) / (log_table[low + 1] - log_table[low])
    return low.to(torch.float64) + fraction


def sigma_at_timestep(timestep: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """Sigma of a fractional timestep, interpolating alphas_cumprod linearly as the reference does
    (timesteps outside the table are clamped to its ends)."""
    alphas_cumprod = 1.0 / (1.0 + sigma_table.to(torch.float64) ** 2)
    t = torch.as_tensor(timestep, dtype=torch.float64).clamp(0, len(sigma_table) - 1)
    low = t.floor().long()
    high = t.ceil().long()
    ac = alphas_cumprod[low] + (t - low) * (alphas_cumprod[high] - alphas_cumprod[low])
    return ((1.0 - ac) / ac).sqrt()


def check_ramp(ramp: tuple[float, ...], steps: int) -> str | None:
    """Message for interior step positions that are not N-1 finite values increasing strictly inside
    (0, 1), else None."""
    if len(ramp) != steps - 1:
        return f"ramp has {len(ramp)} values; steps = {steps} needs {steps - 1}"
    points = (0.0, *ramp, 1.0)
    if not all(math.isfinite(v) for v in ramp) or any(b <= a for a, b in zip(points, points[1:])):
        return "ramp values must increase strictly inside (0, 1)"
    return None


def fewstep_timesteps(steps: int, base_steps: int, base_rho: float, end_index: int, time_rho: float = 1.2,
                      denoise: float = 1.0, ramp: tuple[float, ...] | None = None) -> torch.Tensor:
    """The N+1 fractional timesteps (float64, descending) of the early-stopping schedule.

    t_start = 999 and t_end = the timestep of base sigma k on the standard training schedule, whatever
    the model (the paper's definition). ``denoise`` < 1 (img2img) starts lower in timestep space:
    t_start' = t_end + denoise * (t_start - t_end), and the same N steps are spaced with ``time_rho``
    between t_start' and t_end. ``ramp`` (N-1 increasing values in (0, 1), e.g. from the schedule
    tuner) replaces the even positions j/N of the interior steps in that Karras spacing; None keeps
    them even, as the paper.
    """
    if not 1 <= end_index < base_steps:
        raise ValueError(f"end_index = {end_index} must be between 1 and base_steps - 1 = {base_steps - 1}")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise = {denoise} must be in (0, 1]")
    table = STANDARD_TABLE
    base = karras_sigmas(base_steps, float(table[0]), float(table[-1]), base_rho)
    t_start = float(len(table) - 1)  # t(base[0]) = t(sigma_max) = 999
    t_end = float(continuous_timestep(base[end_index], table))
    t_start = t_end + denoise * (t_start - t_end)
    if ramp is None:
        ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    else:
        problem = check_ramp(ramp, steps)
        if problem:
            raise ValueError(problem)
        ramp = torch.tensor([0.0, *ramp, 1.0], dtype=torch.float64)
    start_inv, end_inv = t_start ** (1.0 / time_rho), t_end ** (1.0 / time_rho)
    return (start_inv + ramp * (end_inv - start_inv)) ** time_rho


def fewstep_sigmas(sigma_table: torch.Tensor, steps: int, base_steps: int, base_rho: float,
                   end_index: int, time_rho: float = 1.2, denoise: float = 1.0,
                   ramp: tuple[float, ...] | None = None, end_zero: bool = False) -> torch.Tensor:
    """The N+1 sigmas of the early-stopping schedule on a model's sigma table; the last one is above
    zero (NFE = N), or 0 with ``end_zero`` (the same N sigmas evaluated, the last step to 0: still N
    evaluations). The timesteps are ``fewstep_timesteps``'s, whatever the table."""
    if len(sigma_table) != TRAINING_TIMESTEPS:
        raise ValueError(f"the sigma table has {len(sigma_table)} entries; it must give the sigma of each of the "
                         f"{TRAINING_TIMESTEPS} training timesteps")
    timesteps = fewstep_timesteps(steps, base_steps, base_rho, end_index, time_rho, denoise, ramp)
    sigmas = sigma_at_timestep(timesteps, sigma_table).to(torch.float32)
    if end_zero:
        sigmas[-1] = 0.0
    return sigmas


def schedule_problem(sigmas: torch.Tensor, final_zero: bool = False) -> str | None:
    """Why ``sigmas`` cannot be sampled, or None: every value finite and positive (a last 0 allowed
    when ``final_zero``), and every step lowers log-sigma by at least MIN_LOG_STEP (so strictly
    descending, also in float32)."""
    values = torch.as_tensor(sigmas).detach().to("cpu", torch.float64).reshape(-1).tolist()
    if not values:
        return "it is empty"
    for i, value in enumerate(values):
        last_zero = final_zero and i == len(values) - 1 and i > 0 and value == 0.0
        if not math.isfinite(value) or (value <= 0.0 and not last_zero):
            return f"sigmas[{i}] = {value:g}; sigmas must be finite and above 0" + (
                " (a last 0 is allowed)" if final_zero else "")
    short = [i for i in range(1, len(values))
             if values[i] != 0.0 and not math.log(values[i - 1]) - math.log(values[i]) >= MIN_LOG_STEP]
    if not short:
        return None
    if len(short) == 1:
        which = f"step {short[0]} of {len(values) - 1} does"
    elif short == list(range(short[0], short[-1] + 1)):
        which = f"steps {short[0]} to {short[-1]} of {len(values) - 1} do"
    else:
        which = f"steps {', '.join(map(str, short[:5]))}{', ...' if len(short) > 5 else ''} of {len(values) - 1} do"
    i = short[0]
    return (f"{which} not lower sigma by at least 0.01 % (step {i}: sigma {values[i - 1]:.7g} -> {values[i]:.7g}); "
            "a schedule must descend strictly, each step by at least 0.01 % (log-sigma 1e-4), the least that "
            "float32 sigmas and the solvers resolve")


def recipe_sigmas(recipe: Recipe, sigma_table: torch.Tensor, denoise: float = 1.0) -> torch.Tensor:
    """The schedule of a named recipe (see ``recipes.RECIPES``) on a model's sigma table."""
    return fewstep_sigmas(sigma_table, recipe.steps, recipe.base_steps, recipe.base_rho,
                          recipe.end_index, recipe.time_rho, denoise, recipe.ramp, recipe.end == "0")
