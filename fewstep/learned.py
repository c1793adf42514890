"""A solver whose numbers are parameters: per-step weights on the data predictions, and a per-step model time
(docs/learned_solver.md).

Weighted multistep (the DPM++ family, data prediction, in the half-log-SNR lambda of the model's noise form):

    x' = (sigma'/sigma) x - alpha' expm1(-h) [w0 D_i + w1 D_{i-1} + w2 D_{i-2}],   h = lambda' - lambda,

whose default weights are the solver's own: DPM++1S (1, 0, 0); DPM++2M (1 + 1/(2r), -1/(2r), 0) with
r = h_{i-1} / h_i, first order on the first step, on a step to sigma 0 and after sigma = 1 (const form). A
``weights`` entry per step holds OFFSETS from these defaults (step i has i+1 of them, at most 3), so zero
offsets are the solver itself.

Analytical first step (``afs``, as UniPC's, ``unipc.py``): the data prediction at sigma_0 is not evaluated but
estimated from the latent (``unipc.afs_estimate``) and the sigma at the timestep midpoint of the first two is
inserted (``unipc.afs_schedule``): N+1 steps for N model evaluations (the first at the inserted sigma), so N+1
``weights`` groups; the estimate is D_0, the first entry of the history.

Model time: at evaluation k the network is told sigma_m = the sigma whose lambda is lambda_k - delta_k
(sigma_k * exp(delta_k) in the eps form) while it sees the sample scaled as at sigma_k and the denoised output is
formed with sigma_k. ComfyUI forms the network input and the output from the one sigma it is given
(c_in(sigma) x and D = c_skip(sigma) x + c_out(sigma) F), so the model is called at sigma_m with the sample
x_m = x c_in(sigma_k) / c_in(sigma_m) (the network then sees c_in(sigma_k) x) and D is re-formed from the
returned D_m: F = (D_m - c_skip(sigma_m) x_m) / c_out(sigma_m), D = c_skip(sigma_k) x + c_out(sigma_k) F.
D is affine in D_m with weights summing to one over CFG's outputs, so CFG and model patches apply unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import trange

from .noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS, half_log_snr, signal_scale
from .solver_names import FINISH_LAST_SIGMA, SOLVERS
from .solvers import finished
from .unipc import afs_estimate, afs_schedule

WEIGHT_LIMIT = 2.0  # |offset| of a weight, params text and plan
MODEL_TIME_LIMIT = 0.5  # |delta| of a model time (lambda units: a factor e^0.5 = 1.65 in sigma, eps form)
HISTORY = 3  # weights per step: the current and up to two earlier data predictions

Weights = tuple[tuple[float, ...], ...]  # per step i, i+1 (at most HISTORY) offsets; shorter: the rest are 0


def group_size(step: int) -> int:
    """Offsets step ``step`` (0-based) may carry: on its own data prediction and up to HISTORY - 1 earlier ones."""
    return min(step + 1, HISTORY)


def weights_problem(weights: Sequence[Sequence[float]], steps: int, name: str = "weights",
                    afs: bool = False) -> str | None:
    """Why ``weights`` (offsets per step) cannot be used for ``steps`` steps (``afs``: the analytical first step
    adds one), or None."""
    if afs:
        steps += 1
    if len(weights) != steps:
        why = f" for {steps - 1} model evaluations with afs=1, which adds the analytical first step" if afs else ""
        return f"{name} has {len(weights)} steps; it needs one per step ({steps}{why}), separated by commas"
    for i, group in enumerate(weights):
        most = group_size(i)
        if not 1 <= len(group) <= most:
            return (f"{name} step {i + 1} has {len(group)} offsets; step {i + 1} allows 1 to {most} (on its own "
                    "data prediction and up to two earlier ones, separated by ':')")
        for value in group:
            if not math.isfinite(value) or abs(value) > WEIGHT_LIMIT:
                return (f"{name} step {i + 1}: offset {value:g} is out of range: allowed -{WEIGHT_LIMIT:g} to "
                        f"{WEIGHT_LIMIT:g}")
    return None


def model_time_problem(model_time: Sequence[float], steps: int, name: str = "model_time") -> str | None:
    """Why ``model_time`` (one delta per model evaluation) cannot be used for ``steps`` evaluations, or None."""
    if len(model_time) != steps:
        return f"{name} has {len(model_time)} values; it needs one per model evaluation ({steps}), separated by commas"
    for i, value in enumerate(model_time):
        if not math.isfinite(value) or abs(value) > MODEL_TIME_LIMIT:
            return (f"{name} evaluation {i + 1}: {value:g} is out of range: allowed -{MODEL_TIME_LIMIT:g} to "
                    f"{MODEL_TIME_LIMIT:g}")
    return None


def active(values) -> bool:
    """Whether weights / a model time change anything (some entry non-zero)."""
    if values is None:
        return False
    return any(any(v != 0.0 for v in item) if isinstance(item, (tuple, list)) else item != 0.0 for item in values)


def default_weights(base: str, lam_previous: float | None, lam: float, lam_next: float) -> tuple[float, float, float]:
    """(w0, w1, w2) of ``base`` (dpmpp_1s or dpmpp_2m) for the step lambda -> lambda_next after lambda_previous
    (None on the first step): DPM++2M's (1 + 1/(2r), -1/(2r), 0), r = (lambda - lambda_previous) / h, else first
    order (1, 0, 0)."""
    if base == SOLVERS[0] or lam_previous is None or lam_previous == -math.inf or lam_next == math.inf:
        return (1.0, 0.0, 0.0)
    r = (lam - lam_previous) / (lam_next - lam)
    return (1.0 + 1.0 / (2.0 * r), -(1.0 / (2.0 * r)), 0.0)


def step_weights(base: str, offsets: Sequence, lam_previous: float | None, lam: float, lam_next: float) -> list:
    """The weights of one step: ``default_weights`` plus ``offsets`` (floats, or tensors for a fit)."""
    weights: list = list(default_weights(base, lam_previous, lam, lam_next))
    for j, offset in enumerate(offsets):
        if isinstance(offset, torch.Tensor) or offset != 0.0:
            weights[j] = weights[j] + offset
    return weights


def weighted_step(x: torch.Tensor, history: Sequence[torch.Tensor], weights: Sequence, sigma: float,
                  sigma_next: float, noise_form: str = NOISE_FORM_EPS, noise: bool = False,
                  denoised: torch.Tensor | None = None) -> torch.Tensor:
    """x' = (s'/s) x - alpha' expm1(-h) sum_j w_j D_{i-j}, ``history`` newest first; to sigma 0: sum_j w_j D_{i-j}.
    With ``noise`` the history holds noise predictions eps_k = (x_k - alpha_k D_k) / sigma_k and the step is
    x' = (alpha'/alpha) x - sigma' expm1(h) sum_j w_j eps_{i-j}, to sigma 0 (x - sigma sum_j w_j eps_{i-j}) / alpha;
    from alpha = 0 (sigma 1, const form) the exact step sigma' x + alpha' D from this step's ``denoised``."""
    blended = None
    for weight, prediction in zip(weights, history):
        if isinstance(weight, torch.Tensor) or weight != 0.0:
            term = prediction if (not isinstance(weight, torch.Tensor) and weight == 1.0) else weight * prediction
            blended = term if blended is None else blended + term
    if blended is None:
        blended = torch.zeros_like(x)
    if noise:
        alpha = signal_scale(sigma, noise_form)
        if alpha == 0.0:
            return sigma_next * x + signal_scale(sigma_next, noise_form) * denoised
        if sigma_next == 0.0:
            return (x - sigma * blended) / alpha
        h = half_log_snr(sigma_next, noise_form) - half_log_snr(sigma, noise_form)
        return (signal_scale(sigma_next, noise_form) / alpha) * x - (sigma_next * math.expm1(h)) * blended
    if sigma_next == 0.0:
        return blended
    h = half_log_snr(sigma_next, noise_form) - half_log_snr(sigma, noise_form)
    return (sigma_next / sigma) * x - (signal_scale(sigma_next, noise_form) * math.expm1(-h)) * blended


def sample_weighted(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
                    disable: bool | None = None, base: str = "dpmpp_2m", weights: Sequence | None = None,
                    finish: str = FINISH_LAST_SIGMA, noise_form: str = NOISE_FORM_EPS, afs: bool = False,
                    sigma_table: torch.Tensor | None = None, prediction: str = "data") -> torch.Tensor:
    """The weighted multistep solver over ``sigmas`` (k-diffusion signature): ``base``'s weights plus ``weights``
    (offsets per step; None: zero). Zero offsets give ``base`` (to rounding; the plan routes them to
    ``solvers.sample_fewstep``, bit for bit). Offsets may be tensors (a fit through autograd). With ``afs`` the
    analytical first step (one more step, the same evaluations; ``sigma_table`` places its midpoint as for UniPC);
    ``callback`` gets one call per model evaluation either way (i = 0 .. N-1). ``prediction`` "noise": the steps
    weigh noise predictions (``weighted_step``; zero offsets: DDIM / DPM-Solver-2M, not DPM++)."""
    noise = prediction == "noise"
    extra_args = {} if extra_args is None else extra_args
    path = afs_schedule(sigmas, sigma_table, noise_form) if afs else sigmas
    values = path.detach().to("cpu", torch.float64).tolist()
    s_in = x.new_ones([x.shape[0]])
    steps = len(values) - 1
    offsets = weights if weights is not None else [()] * steps
    history: list[torch.Tensor] = []
    for i in trange(steps, disable=disable):
        sigma, sigma_next = values[i], values[i + 1]
        if afs and i == 0:
            eps, denoised = afs_estimate(x, sigma, noise_form)
        else:
            denoised = model(x, path[i] * s_in, **extra_args)
            if callback is not None:
                k = i - 1 if afs else i
                callback({"x": x, "i": k, "sigma": path[i], "sigma_hat": path[i], "denoised": denoised})
            eps = (x - signal_scale(sigma, noise_form) * denoised) / sigma if noise else None
        history = [eps if noise else denoised, *history[:HISTORY - 1]]
        lam_previous = half_log_snr(values[i - 1], noise_form) if i > 0 else None
        w = step_weights(base, offsets[i], lam_previous, half_log_snr(sigma, noise_form),
                         half_log_snr(sigma_next, noise_form))
        x = weighted_step(x, history, w, sigma, sigma_next, noise_form, noise, denoised)
    return finished(model, x, sigmas, finish, extra_args, callback)


@dataclass(frozen=True)
class Preconditioning:
    """How a model forms the network's input and the denoised output from the one sigma it is given:
    input = c_in(sigma) x, D = c_skip(sigma) x + c_out(sigma) F (ComfyUI's calculate_input / calculate_denoised)."""

    c_in: Callable[[float], float]
    c_skip: Callable[[float], float]
    c_out: Callable[[float], float]


PRECONDITIONINGS = {  # closed forms of ComfyUI's model_sampling kinds (sigma_data = 1)
    "eps": Preconditioning(lambda s: 1.0 / math.sqrt(s * s + 1.0), lambda s: 1.0, lambda s: -s),
    "v": Preconditioning(lambda s: 1.0 / math.sqrt(s * s + 1.0), lambda s: 1.0 / (s * s + 1.0),
                         lambda s: -s / math.sqrt(s * s + 1.0)),
    "const": Preconditioning(lambda s: 1.0, lambda s: 1.0, lambda s: -s),
}


def model_sigma(sigma: float, delta: float, noise_form: str = NOISE_FORM_EPS) -> float:
    """The sigma the network is told for ``sigma`` with model time ``delta``: lambda - delta, i.e. sigma e^delta
    (eps form), sigma' / (1 - sigma') = e^delta sigma / (1 - sigma) (const form; 1 stays 1)."""
    if noise_form == NOISE_FORM_CONST:
        if sigma >= 1.0:
            return sigma
        odds = math.exp(delta) * sigma / (1.0 - sigma)
        return odds / (1.0 + odds)
    return sigma * math.exp(delta)


def at_model_time(model, model_time: Sequence[float], preconditioning: Preconditioning,
                  noise_form: str = NOISE_FORM_EPS):
    """``model`` (k-diffusion ``model(x, sigma_batch, **extra)`` = D) whose k-th evaluation is told the model time
    ``model_time[k]`` (0 after the last, and wherever it is 0: the plain call)."""
    count = [0]

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        k = count[0]
        count[0] += 1
        delta = model_time[k] if k < len(model_time) else 0.0
        if delta == 0.0:
            return model(x, sigma, **extra_args)
        s = float(sigma.reshape(-1)[0])
        s_m = model_sigma(s, delta, noise_form)
        p = preconditioning
        scale = p.c_in(s) / p.c_in(s_m)
        x_m = x * scale
        denoised_m = model(x_m, torch.full_like(sigma, s_m), **extra_args)
        ratio = p.c_out(s) / p.c_out(s_m)
        return (p.c_skip(s) - ratio * p.c_skip(s_m) * scale) * x + ratio * denoised_m

    return denoise
