"""DPM++1S and DPM++2M on a schedule that may end above zero (RECIPES.md, "The solvers").

``sample_fewstep`` has the k-diffusion sampler signature, so ComfyUI's KSAMPLER can drive it:
``model(x, sigma * s_in, **extra_args)`` returns the data prediction D (guidance applied). ``noise_form`` says
how the model mixes noise in (``noise_forms.py``): the steps are taken in that form's half-log-SNR lambda.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from .noise_forms import NOISE_FORM_EPS, half_log_snr, noise_form_problem, signal_scale
from .schedule import schedule_problem
from .solver_names import FINISH_DENOISED, FINISH_LAST_SIGMA, FINISHES, SCHEDULE_SOLVERS, SOLVERS, UNIPC_SOLVERS

__all__ = ["FINISHES", "FINISH_DENOISED", "FINISH_LAST_SIGMA", "SCHEDULE_SOLVERS", "SOLVERS", "UNIPC_SOLVERS",
           "dpmpp_1s_step", "dpmpp_2m_step", "sample_fewstep"]


def dpmpp_1s_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """x' = (s'/s) x + (1 - s'/s) D: the first-order step (Euler in sigma, DDIM), in both noise forms
    (alpha' (1 - e^-h) = 1 - s'/s in each; exact from sigma = 1 in the const form, where x is the noise)."""
    ratio = sigma_next / sigma
    return ratio * x + (1.0 - ratio) * denoised


def dpmpp_2m_step(x: torch.Tensor, denoised: torch.Tensor, previous_denoised: torch.Tensor | None,
                  sigma_previous: float | None, sigma: float, sigma_next: float,
                  noise_form: str = NOISE_FORM_EPS) -> torch.Tensor:
    """One DPM++2M step in the half-log-SNR lambda of ``noise_form``: x' = (s'/s) x - alpha' expm1(-h) D_d.

    First order without a previous D, at sigma' = 0 (returns D), and after a previous sigma of 1 in the const
    form (lambda = -inf there: a D infinitely far back in lambda gives no slope, r = inf and D_d = D).
    """
    if sigma_next == 0.0:
        return denoised
    lam, lam_next = half_log_snr(sigma, noise_form), half_log_snr(sigma_next, noise_form)
    h = lam_next - lam  # inf from sigma = 1 in the const form: expm1(-h) = -1, the exact step from pure noise
    if previous_denoised is None or half_log_snr(sigma_previous, noise_form) == -math.inf:
        blended = denoised
    else:
        r = (lam - half_log_snr(sigma_previous, noise_form)) / h
        blended = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * previous_denoised
    return (sigma_next / sigma) * x - (signal_scale(sigma_next, noise_form) * math.expm1(-h)) * blended


def sample_fewstep(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                   callback=None, disable: bool | None = None, solver: str = "dpmpp_1s",
                   finish: str = FINISH_LAST_SIGMA, noise_form: str = NOISE_FORM_EPS) -> torch.Tensor:
    """Run ``solver`` over ``sigmas``: len(sigmas) - 1 model evaluations, plus one if finish="denoised".

    With finish="last_sigma" the latent at the last sigma is returned, as the paper decodes it.
    With finish="denoised" and a last sigma above zero, one more evaluation returns D(x, sigma_N).
    ``sigmas`` must descend strictly (see ``schedule.schedule_problem``; a last 0 is allowed), else ValueError;
    ``noise_form`` is ``eps`` (x = x0 + sigma eps) or ``const`` (x = (1 - sigma) x0 + sigma eps, sigmas <= 1).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver = {solver!r} is not one of {SOLVERS}")
    if finish not in FINISHES:
        raise ValueError(f"finish = {finish!r} is not one of {FINISHES}")
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(f"sigmas: {problem}")
    values = sigmas.tolist()
    problem = noise_form_problem(noise_form, values)
    if problem:
        raise ValueError(problem)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
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
            x = dpmpp_2m_step(x, denoised, previous_denoised, sigma_previous, sigma, sigma_next, noise_form)
        previous_denoised = denoised
    return finished(model, x, sigmas, finish, extra_args, callback)


def finished(model, x: torch.Tensor, sigmas: torch.Tensor, finish: str, extra_args: dict, callback) -> torch.Tensor:
    """What a DPM++ run returns from the latent ``x`` at the last sigma: ``x`` (finish="last_sigma", or a last sigma
    of 0), or the data prediction there, one more evaluation (finish="denoised")."""
    if finish != FINISH_DENOISED or float(sigmas[-1]) <= 0.0:
        return x
    denoised = model(x, sigmas[-1] * x.new_ones([x.shape[0]]), **extra_args)
    if callback is not None:
        callback({"x": x, "i": len(sigmas) - 1, "sigma": sigmas[-1], "sigma_hat": sigmas[-1], "denoised": denoised})
    return denoised

