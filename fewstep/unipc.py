"""UniPC on a few-step schedule, with the analytical first step (RECIPES.md, "F-scheduler").

All in ComfyUI's variables: x = alpha x0 + sigma * eps with alpha = 1 (noise_form "eps": EPS, V, EDM) or
alpha = 1 - sigma (noise_form "const": flow matching; docs/noise_forms.md), the model returns the data
prediction D (guidance applied), eps = (x - alpha D) / sigma, lambda = log(alpha / sigma), and a step from
sigma to sigma' has h = lambda' - lambda (= log(sigma / sigma') in the eps form). In these variables the VP
update of the UniPC paper reads

    noise prediction (the reference): x' = (alpha'/alpha) x - sigma' * [expm1(h) e0 + B(h) * sum_k rho_k D1_k]
    data prediction (ComfyUI's uni_pc): x' = (sigma'/sigma) x - alpha' * [expm1(-h) d0 + B(-h) * sum_k rho_k D1_k]

with e0 / d0 the model output (eps or D) at sigma, D1_k = (m_k - m0) / r_k the scaled differences to
the earlier outputs m_k at lambda_k, r_k = (lambda_k - lambda0) / h, and B(h) = h ("bh1") or
expm1(h) ("bh2"). The predictor uses the earlier outputs; the UniC corrector then re-solves the
step with the model output at the predicted point added as the newest difference (no extra model
evaluation: that output is the next step's m0). The corrector is applied at every step except the
last, and a step's order is min(order, its index, steps + 1 - its index) (lower order while the
history fills up and on the final steps), as the reference and ComfyUI's uni_pc do.

A schedule of N+1 sigmas costs N model evaluations: at sigma_0, then at each predicted point
sigma_1 .. sigma_{N-1}; the last step reuses the last one. A step to sigma' = 0 is first order
(the limit of both predictions): (x - sigma * e0) / alpha, or d0.

In the const form a schedule may start at sigma = 1 (alpha = 0, lambda = -inf, h infinite): the step from
there is the exact first-order step x' = sigma' x + (1 - sigma') D from the data prediction D at sigma = 1
(also with the noise prediction, which is x itself there and carries nothing of the model), without the
corrector (B(h) = h is infinite); later steps leave that output out of their differences (infinitely far
back in lambda, it gives no slope), so the step after it is one order lower.

Analytical first step (``afs``): the output at sigma_0 is not evaluated but estimated as
eps = x / sqrt(alpha_0^2 + sigma_0^2) (the noise of a pure-noise start latent; D = (x - sigma_0 eps) / alpha_0,
0 at sigma_0 = 1 in the const form), and a sigma is inserted at the midpoint IN TIMESTEP SPACE of the first
two on the model's own noise schedule: N+2 sigmas, N+1 steps, still N evaluations (the first at the
inserted sigma, then at sigma_1 .. sigma_{N-1}).
Step numbering seen by model patches (Timed FreeU) is that of the N+1 input sigmas: the k-th
model evaluation is step k, with or without AFS.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from .noise_forms import NOISE_FORM_CONST, NOISE_FORM_EPS, half_log_snr, noise_form_problem, signal_scale
from .schedule import STANDARD_TABLE, continuous_timestep, schedule_problem, sigma_at_timestep
from .solver_names import FINISH_DENOISED, FINISH_LAST_SIGMA, FINISHES

ORDERS = ("auto", "1", "2", "3")
VARIANTS = ("bh1", "bh2")
PREDICTIONS = ("noise", "data")
AUTO_ORDER_SWITCH = 7  # auto: order 1 up to 6 model evaluations, order 2 from 7 (the reference)


def auto_order(evaluations: int) -> int:
    """The reference's UniPC order for a schedule of ``evaluations`` model evaluations."""
    return 1 if evaluations < AUTO_ORDER_SWITCH else 2


def resolve_order(order: str | int, evaluations: int) -> int:
    """``order`` as an integer 1..3 ("auto" by the evaluation count); ValueError naming it otherwise."""
    if str(order) == "auto":
        return auto_order(evaluations)
    if str(order) not in ORDERS:
        raise ValueError(f"order = {order!r} is not one of {list(ORDERS)}")
    return int(order)


def step_orders(order: int, steps: int) -> list[int]:
    """The order of each of ``steps`` steps (1-based i): min(order, i, steps + 1 - i)."""
    return [min(order, i, steps + 1 - i) for i in range(1, steps + 1)]


def afs_midpoint(sigma_0: float, sigma_1: float, sigma_table: torch.Tensor | None = STANDARD_TABLE,
                 noise_form: str = NOISE_FORM_EPS) -> float:
    """The sigma AFS inserts: at the midpoint in timestep space of ``sigma_0`` and ``sigma_1`` on
    ``sigma_table`` (the model's sigma at each training timestep; the reference's interpolation).

    In the const form the timestep is read back linearly in log-sigma (alphas_cumprod is a VP notion), and
    without a table the midpoint is in the unshifted flow time t = sigma: (sigma_0 + sigma_1) / 2.
    """
    if noise_form == NOISE_FORM_CONST:
        if sigma_table is None:
            return (sigma_0 + sigma_1) / 2.0
        t = continuous_timestep(torch.tensor([sigma_0, sigma_1], dtype=torch.float64), sigma_table)
        return _sigma_at_timestep_log((float(t[0]) + float(t[1])) / 2.0, sigma_table)
    sigma_table = STANDARD_TABLE if sigma_table is None else sigma_table
    t = continuous_timestep(torch.tensor([sigma_0, sigma_1], dtype=torch.float64), sigma_table)
    return float(sigma_at_timestep((t[0] + t[1]) / 2.0, sigma_table))


def _sigma_at_timestep_log(timestep: float, sigma_table: torch.Tensor) -> float:
    """Sigma of a fractional timestep, linear in log-sigma between table entries (continuous_timestep's inverse)."""
    log_table = sigma_table.to(torch.float64).log()
    t = min(max(timestep, 0.0), len(log_table) - 1.0)
    low = min(int(math.floor(t)), len(log_table) - 2)
    return math.exp(float(log_table[low] + (t - low) * (log_table[low + 1] - log_table[low])))


def afs_schedule(sigmas: torch.Tensor, sigma_table: torch.Tensor | None = STANDARD_TABLE,
                 noise_form: str = NOISE_FORM_EPS) -> torch.Tensor:
    """The N+2 sigmas AFS steps through: ``sigmas`` with ``afs_midpoint`` of the first two inserted."""
    if len(sigmas) < 2:
        raise ValueError("sigmas: the analytical first step needs at least 2 sigmas (one step)")
    values = sigmas.detach().to("cpu", torch.float64)
    middle = afs_midpoint(float(values[0]), float(values[1]), sigma_table, noise_form)
    return torch.cat([values[:1], values.new_tensor([middle]), values[1:]]).to(sigmas.dtype).to(sigmas.device)


def afs_estimate(x: torch.Tensor, sigma: float, noise_form: str = NOISE_FORM_EPS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, D) the analytical first step puts in place of the model at ``sigma``: eps = x / sqrt(alpha^2 +
    sigma^2), the start latent's noise at unit scale, and D = (x - sigma eps) / alpha, written in the const
    form as x alpha / (n (n + sigma)), n = sqrt(alpha^2 + sigma^2): 0 (the prior mean) at sigma = 1."""
    if noise_form == NOISE_FORM_EPS:
        eps = x / math.sqrt(1.0 + sigma ** 2)
        return eps, x - sigma * eps
    alpha = signal_scale(sigma, noise_form)
    norm = math.sqrt(alpha ** 2 + sigma ** 2)
    return x / norm, x * (alpha / (norm * (norm + sigma)))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Solve a small (<= 3 x 3) linear system in float64."""
    return torch.linalg.solve(torch.tensor(matrix, dtype=torch.float64),
                              torch.tensor(vector, dtype=torch.float64)).tolist()


def coefficients(h: float, ratios: list[float], order: int, variant: str, prediction: str
                 ) -> tuple[float, float, list[float], list[float]]:
    """(phi, B, predictor rhos, corrector rhos) of one UniPC step of ``order`` in the UniPC paper's
    B(h) form; ``ratios`` are the order-1 values r_k of the earlier outputs.

    phi = expm1(hh) and B = hh ("bh1") or expm1(hh) ("bh2"), with hh = h (noise form) or -h (data
    form). The rhos solve R rho = b, R[i][k] = r_k^i, b_i = (i+1)! phi_{i+2}(hh) / B, with r = 1
    for the corrector's newest point; order 2's predictor and order 1's corrector use rho = 0.5.
    """
    hh = h if prediction == "noise" else -h
    phi = math.expm1(hh)
    big_b = hh if variant == "bh1" else math.expm1(hh)
    points = [*ratios, 1.0]
    rows, b = [], []
    phi_k, factorial = phi / hh - 1.0, 1
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in points])
        b.append(phi_k * factorial / big_b)
        factorial *= i + 1
        phi_k = phi_k / hh - 1.0 / factorial
    if order == 1:
        predictor, corrector = [], [0.5]
    else:
        predictor = [0.5] if order == 2 else _solve([row[:-1] for row in rows[:-1]], b[:-1])
        corrector = _solve(rows, b)
    return phi, big_b, predictor, corrector


def _combine(terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor | float:
    total = 0.0
    for weight, tensor in terms:
        total = total + weight * tensor
    return total


def sample_unipc(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
                 disable: bool | None = None, order: str | int = "auto", variant: str = "bh1", afs: bool = False,
                 finish: str = FINISH_LAST_SIGMA, prediction: str = "noise",
                 sigma_table: torch.Tensor | None = None, corrector: bool = True,
                 noise_form: str = NOISE_FORM_EPS) -> torch.Tensor:
    """UniPC over ``sigmas`` (k-diffusion sampler signature; ``model(x, sigma * s_in, **extra_args)`` = D).

    N+1 sigmas cost N model evaluations (with or without ``afs``; ``sigma_table`` places the AFS
    midpoint, by default the standard SD1.x / SDXL table in the eps form, t = sigma in the const form), plus
    one with finish="denoised" and a last sigma above 0, which returns D there. With finish="last_sigma"
    the latent at the last sigma is returned, as the paper decodes it.
    ``corrector=False`` drops the corrector on every step (for tests: order 1 is then DPM++1S).
    ``noise_form``: ``eps`` (x = x0 + sigma eps) or ``const`` (x = (1 - sigma) x0 + sigma eps, sigmas <= 1).
    ``callback`` gets one call per model evaluation, i = 0 .. N-1 (N with finish="denoised").
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant = {variant!r} is not one of {list(VARIANTS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction = {prediction!r} is not one of {list(PREDICTIONS)}")
    if finish not in FINISHES:
        raise ValueError(f"finish = {finish!r} is not one of {list(FINISHES)}")
    problem = schedule_problem(sigmas, final_zero=True)
    if problem:
        raise ValueError(f"sigmas: {problem}")
    problem = noise_form_problem(noise_form, sigmas.detach().to("cpu", torch.float64).tolist())
    if problem:
        raise ValueError(problem)
    evaluations = len(sigmas) - 1
    max_order = resolve_order(order, evaluations)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    if sigma_table is None and noise_form == NOISE_FORM_EPS:
        sigma_table = STANDARD_TABLE
    path = afs_schedule(sigmas, sigma_table, noise_form) if afs else sigmas
    values = path.detach().to("cpu", torch.float64).tolist()
    steps = len(values) - 1
    orders = step_orders(max_order, steps)
    noise_prediction = prediction == "noise"
    count = [0]

    def evaluate(x_at: torch.Tensor, i: int) -> torch.Tensor:
        denoised = model(x_at, path[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x_at, "i": count[0], "sigma": path[i], "sigma_hat": path[i], "denoised": denoised})
        count[0] += 1
        return denoised

    def output(x_at: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        return (x_at - signal_scale(sigma, noise_form) * denoised) / sigma if noise_prediction else denoised

    if afs:
        eps, first_denoised = afs_estimate(x, values[0], noise_form)
        history = [(values[0], eps if noise_prediction else first_denoised)]
    else:
        first_denoised = evaluate(x, 0)
        history = [(values[0], output(x, first_denoised, values[0]))]

    for i in trange(steps, disable=disable):
        sigma, sigma_next = values[i], values[i + 1]
        step_order = orders[i]
        final = i == steps - 1
        m0 = history[-1][1]
        alpha, alpha_next = signal_scale(sigma, noise_form), signal_scale(sigma_next, noise_form)
        lam, lam_next = half_log_snr(sigma, noise_form), half_log_snr(sigma_next, noise_form)
        if lam == -math.inf:  # const form from sigma = 1 (only the first step): exact, first order, no corrector
            x_next = sigma_next * x + alpha_next * first_denoised
        elif sigma_next == 0.0:  # the limit of the first-order step (only the last step can reach 0)
            x = (x - sigma * m0) / alpha if noise_prediction else m0
            break
        else:
            h = lam_next - lam
            # the step_order - 1 outputs before m0, newest first; one at lambda = -inf gives no slope
            earlier = [(s_k, m_k) for s_k, m_k in history[-step_order:-1][::-1]
                       if half_log_snr(s_k, noise_form) != -math.inf]
            ratios = [(half_log_snr(s_k, noise_form) - lam) / h for s_k, _ in earlier]
            differences = [(m_k - m0) / r for (_, m_k), r in zip(earlier, ratios)]
            phi, big_b, rho_p, rho_c = coefficients(h, ratios, len(earlier) + 1, variant, prediction)
            if noise_prediction:
                base = (alpha_next / alpha) * x - (sigma_next * phi) * m0
                scale = -sigma_next * big_b
            else:
                base = (sigma_next / sigma) * x - (alpha_next * phi) * m0
                scale = -alpha_next * big_b
            x_next = base + scale * _combine(list(zip(rho_p, differences)))
        if not final:
            denoised = evaluate(x_next, i + 1)
            m_next = output(x_next, denoised, sigma_next)
            if corrector and lam != -math.inf:
                x_next = base + scale * _combine([*zip(rho_c[:-1], differences), (rho_c[-1], m_next - m0)])
            history = [*history[-2:], (sigma_next, m_next)]
        x = x_next

    if finish == FINISH_DENOISED and values[-1] > 0.0:
        x = evaluate(x, len(values) - 1)
    return x
