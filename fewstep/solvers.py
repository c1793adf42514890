"""DPM++1S and DPM++2M on a schedule that may end above zero (RECIPES.md, "The solvers").

``sample_fewstep`` has the k-diffusion sampler signature, so ComfyUI's KSAMPLER can drive it:
``model(x, sigma * s_in, **extra_args)`` returns the data prediction D (guidance applied).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from .schedule import schedule_problem
from .solver_names import FINISH_DENOISED, FINISH_LAST_SIGMA, FINISHES, SCHEDULE_SOLVERS, SOLVERS, UNIPC_SOLVERS

__all__ = ["FINISHES", "FINISH_DENOISED", "FINISH_LAST_SIGMA", "SCHEDULE_SOLVERS", "SOLVERS", "UNIPC_SOLVERS",
           "dpmpp_1s_step", "dpmpp_2m_step", "sample_fewstep"]


def dpmpp_1s_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """x' = (s'/s) x + (1 - s'/s) D: the first-order step (Euler in sigma, DDIM)."""
    ratio = sigma_next / sigma
    return ratio * x + (1.0 - ratio) * denoised


def dpmpp_2m_step(x: torch.Tensor, denoised: torch.Tensor, previous_denoised: torch.Tensor | None,
                  sigma_previous: float | None, sigma: float, sigma_next: float) -> torch.Tensor:
    """One DPM++2M step in lambda = -log(sigma); first order without a previous D or at sigma' = 0."""
    if sigma_next == 0.0:
        return denoised
    h = math.log(sigma) - math.log(sigma_next)
    if previous_denoised is None:
        blended = denoised
    else:
        r = (math.log(sigma_previous) - math.log(sigma)) / h
        blended = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * previous_denoised
    return (sigma_next / sigma) * x - math.expm1(-h) * blended


def sample_fewstep(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                   callback=None, disable: bool | None = None, solver: str = "dpmpp_1s",
                   finish: str = FINISH_LAST_SIGMA) -> torch.Tensor:
    """Run ``solver`` over ``sigmas``: len(sigmas) - 1 model evaluations, plus one if finish="denoised".

    With finish="last_sigma" the latent at the last sigma is returned, as the paper decodes it.
    With finish="denoised" and a last sigma above zero, one more evaluation returns D(x, sigma_N).
    ``sigmas`` must descend strictly (see ``schedule.schedule_problem``; a last 0 is allowed), else ValueError.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver = {solver!r} is not one of {SOLVERS}")
    if finish not in FINISHES:
        raise ValueError(f"finish = {finish!r} is not one of {FINISHES}")
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(f"sigmas: {problem}")
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    values = sigmas.tolist()
    previous_denoised = None
    steps = len(values) - 1
    for i in trange(steps, disable=disable):
        sigma, sigma_next = values[i], values[i + 1]
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if solver == "dpmpp_1s":
            x = dpmpp_1s_step(x, denoised, sigma, sigma_next)
        else:
            sigma_previous = values[i - 1] if i > 0 else None
            x = dpmpp_2m_step(x, denoised, previous_denoised, sigma_previous, sigma, sigma_next)
        previous_denoised = denoised
    if finish == FINISH_DENOISED and values[-1] > 0.0:
        denoised = model(x, sigmas[-1] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": steps, "sigma": sigmas[-1], "sigma_hat": sigmas[-1], "denoised": denoised})
        x = denoised
    return x

