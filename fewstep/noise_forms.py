"""The two noise forms ComfyUI's models sample in, and the half-log-SNR the solvers step in (docs/noise_forms.md).

``eps``:   x = x0 + sigma eps (ComfyUI's EPS, V_PREDICTION, EDM ...): alpha = 1, lambda = -log(sigma), sigma > 0.
``const``: x = (1 - sigma) x0 + sigma eps (ComfyUI's CONST: flow matching, SD3, Flux ...): alpha = 1 - sigma,
           lambda = log((1 - sigma) / sigma), sigma in (0, 1]; at sigma = 1, alpha = 0 and lambda = -inf.

The DPM++ and UniPC steps are exponential-integrator steps in lambda with these alpha; in both forms the
probability-flow ODE in (x, sigma) reads dx/dsigma = (x - D) / sigma, so a first-order step and the exact
solution for a constant D are the same in both, and the forms differ in the higher-order terms (the ratios
of steps in lambda, the phi functions of h) and in what the noise prediction is.
"""

from __future__ import annotations

import math

NOISE_FORM_EPS = "eps"
NOISE_FORM_CONST = "const"
NOISE_FORMS = (NOISE_FORM_EPS, NOISE_FORM_CONST)


def signal_scale(sigma: float, noise_form: str = NOISE_FORM_EPS) -> float:
    """alpha, the scale of x0 in x at ``sigma``: 1 (eps) or 1 - sigma (const)."""
    return 1.0 if noise_form == NOISE_FORM_EPS else 1.0 - sigma


def half_log_snr(sigma: float, noise_form: str = NOISE_FORM_EPS) -> float:
    """lambda = log(alpha / sigma): -log(sigma) (eps) or log((1 - sigma) / sigma) (const); +inf at sigma = 0,
    -inf at sigma = 1 in the const form (x is pure noise there)."""
    if sigma == 0.0:
        return math.inf
    if noise_form == NOISE_FORM_EPS:
        return -math.log(sigma)
    if sigma >= 1.0:
        return -math.inf
    return math.log1p(-sigma) - math.log(sigma)


def noise_form_problem(noise_form: str, sigmas: list[float]) -> str | None:
    """Why ``sigmas`` cannot be sampled in ``noise_form``, or None (the const form needs every sigma <= 1)."""
    if noise_form not in NOISE_FORMS:
        return f"noise_form = {noise_form!r} is not one of {list(NOISE_FORMS)}"
    if noise_form == NOISE_FORM_CONST:
        for i, value in enumerate(sigmas):
            if value > 1.0:
                return (f"sigmas[{i}] = {value:g}; in the const noise form x = (1 - sigma) x0 + sigma eps, "
                        "sigmas must be at most 1")
    return None
