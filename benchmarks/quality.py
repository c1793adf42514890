"""Quality proxy: the few-step recipes against ComfyUI's samplers on models whose exact denoiser is known.

Three analytic "models" in the SD latent shape (4 x 8 x 8), each scaled to unit average variance, the
ranking reported on each separately (MODELS): a mixture of Gaussians with anisotropic diagonal
covariances; a mixture of many narrow Gaussians in tight clusters; and data on circles and 2-spheres
in random subspaces (a curved low-dimensional set). A Gaussian mixture's noisy marginal at sigma is the
same mixture with covariances Sigma_k + sigma^2 I; on a sphere the posterior of the point given x is von
Mises-Fisher; so each denoiser D(x, sigma) = E[x0 | x] is exact and cheap. It is plugged into ComfyUI's
real sampling path: ``KSAMPLER.sample`` of core samplers (``comfy.samplers.sampler_object``) and of the
pack's samplers (KSampler names, Few-Step DPM++ Sampler, Few-Step UniPC Sampler), with a real SD1.5
``ModelSamplingDiscrete`` + ``EPS`` object for noise scaling and schedules (``KSampler``'s own sigmas for
core schedulers, AYS / GITS nodes where the ComfyUI under test has them, the pack's nodes for the
recipes). Every model evaluation is counted.

For each budget of model evaluations (NFE) every method reports
  - the Frechet distance between its samples and the exact model (exact mean and covariance,
    full 256 x 256), mean and 95% interval over seeds;
  - the RMS distance to a high-accuracy solution (RK4 in log-sigma) of the same probability-flow
    ODE from the same noise, at the sigma where the method stops and at sigma = 0.
With tuning on (the default), the schedule tuner (fewstep/tuner.py) first tunes a schedule per model,
budget and solver (DPM++2M, DPM++1S, UniPC, UniPC + AFS) on probe noises disjoint from the evaluation
noises; the tuned schedules then run through Few-Step Sigmas' `params` input and the pack's sampler
for that solver like every other method.

    python benchmarks/quality.py            # full run, writes docs/quality.md and docs/quality.png
    python benchmarks/quality.py --quick    # a few methods, one seed, no docs (the smoke test)
    python benchmarks/quality.py --no-tuned # without the tuned rows
    python benchmarks/quality.py --models spheres --seeds 2   # one model, fewer seeds
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/quality.py   # another ComfyUI than PINNED
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported at run time inside the harness, once ComfyUI and the pack are on sys.path
    from fewstep.tuner import TuneResult

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
log = logging.getLogger("quality")

LATENT_SHAPE = (4, 8, 8)
BASELINE = ("dpmpp_2m", "karras", 20)
# The pack's sampler names; core samplers and schedulers are everything else in ComfyUI's lists.
PACK_SAMPLERS = {"fewstep_dpmpp_1s", "fewstep_dpmpp_2m", "fewstep_unipc"}
PACK_SCHEDULERS = {"fewstep"}
# Samplers that stop at the last non-zero sigma of a schedule ending in 0 (DPM-Solver's own grid).
STOP_AT_LAST_NONZERO = {"dpm_fast"}
UNI_PC_END = 0.001  # uni_pc replaces a final sigma of 0 by this value
EXCLUDED = {
    "dpm_adaptive": "adaptive step size: its NFE is set by tolerances, not by steps",
    "ddim": "in ComfyUI an alias of euler (it only differs when inpainting)",
}
CFG_PP_REASON = "CFG++ variant: needs a separate unconditional prediction; without guidance it is its base sampler"


# --------------------------------------------------------------------------------------------
# The analytic model
# --------------------------------------------------------------------------------------------

@dataclass
class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances over flattened latents, in float64."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    variances: torch.Tensor  # (K, D), the diagonal of each Sigma_k

    @classmethod
    def random(cls, components: int = 6, shape=LATENT_SHAPE, seed: int = 0,
               std_range: tuple[float, float] = (0.05, 0.8)) -> "GaussianMixture":
        """Random weights, means and log-uniform per-dimension stds, rescaled to unit average variance."""
        generator = torch.Generator().manual_seed(seed)
        dims = math.prod(shape)
        weights = torch.rand(components, generator=generator, dtype=torch.float64) + 0.5
        means = torch.randn(components, dims, generator=generator, dtype=torch.float64) * 0.8
        low, high = (math.log(s) for s in std_range)
        log_std = low + (high - low) * torch.rand(components, dims, generator=generator, dtype=torch.float64)
        mixture = cls(weights / weights.sum(), means, (2.0 * log_std).exp())
        scale = mixture.covariance().diagonal().mean()  # like SD latents after the VAE scale factor
        return cls(mixture.weights, mixture.means / scale.sqrt(), mixture.variances / scale)

    @classmethod
    def clustered(cls, clusters: int = 8, per_cluster: int = 4, shape=LATENT_SHAPE, seed: int = 0,
                  spread: float = 0.35, std_range: tuple[float, float] = (0.01, 0.08)) -> "GaussianMixture":
        """Many narrow components in a few tight groups: ``clusters`` centres, ``per_cluster`` components
        around each (offsets ``spread`` times the centres' scale), per-dimension stds log-uniform over
        ``std_range`` of the centres' scale; rescaled to unit average variance. Almost all of the variance
        is between components, so the denoiser switches sharply between them at low sigma."""
        generator = torch.Generator().manual_seed(seed)
        dims = math.prod(shape)
        centres = torch.randn(clusters, dims, generator=generator, dtype=torch.float64)
        offsets = torch.randn(clusters, per_cluster, dims, generator=generator, dtype=torch.float64) * spread
        means = (centres[:, None, :] + offsets).reshape(clusters * per_cluster, dims)
        components = clusters * per_cluster
        weights = torch.rand(components, generator=generator, dtype=torch.float64) + 0.5
        low, high = (math.log(s) for s in std_range)
        log_std = low + (high - low) * torch.rand(components, dims, generator=generator, dtype=torch.float64)
        mixture = cls(weights / weights.sum(), means, (2.0 * log_std).exp())
        scale = mixture.covariance().diagonal().mean()
        return cls(mixture.weights, mixture.means / scale.sqrt(), mixture.variances / scale)

    @property
    def dims(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Exact covariance: sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = torch.diag(self.weights @ self.variances) + (self.means.T * self.weights) @ self.means
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples (n, D)."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dims, generator=generator, dtype=torch.float64)
        return self.means[component] + self.variances[component].sqrt() * z

    def _log_terms(self, x: torch.Tensor, sigma: torch.Tensor):
        """log(w_k N(x; mu_k, Sigma_k + sigma^2 I)) (B, K) and Sigma_k (Sigma_k + sigma^2 I)^-1 (B, K, D) or (K, D)."""
        if bool((sigma == sigma[0]).all()):  # one noise level: (K, D) factors and matrix products
            variance = self.variances + sigma[0] ** 2
            inverse = 1.0 / variance
            quadratic = ((x ** 2) @ inverse.T - 2.0 * x @ (self.means * inverse).T
                         + (self.means ** 2 * inverse).sum(1))
            log_det = variance.log().sum(1)
        else:
            variance = self.variances[None] + (sigma ** 2)[:, None, None]  # (B, K, D)
            quadratic = ((x[:, None, :] - self.means[None]) ** 2 / variance).sum(-1)
            log_det = variance.log().sum(-1)
        log_terms = self.weights.log() - 0.5 * (quadratic + log_det + self.dims * math.log(2.0 * math.pi))
        return log_terms, self.variances / variance

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) of the noisy marginal (B,), for x (B, D) and sigma (B,)."""
        return torch.logsumexp(self._log_terms(x, sigma)[0], dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] = sum_k r_k(x) (mu_k + Sigma_k (Sigma_k + sigma^2 I)^-1 (x - mu_k)), x (B, D), sigma (B,)."""
        log_terms, gain = self._log_terms(x, sigma)
        responsibility = torch.softmax(log_terms, dim=1)  # r_k, normalised with logsumexp
        if gain.dim() == 2:  # sum_k r_k (1 - a_k) mu_k + x * sum_k r_k a_k
            return responsibility @ ((1.0 - gain) * self.means) + x * (responsibility @ gain)
        posterior_means = self.means[None] + gain * (x[:, None, :] - self.means[None])
        return torch.einsum("bk,bkd->bd", responsibility, posterior_means)


def _log_mean_exp_on_sphere(kappa: torch.Tensor, k: int) -> torch.Tensor:
    """log E_s[exp(kappa mu.s)] for s uniform on the unit sphere S^(k-1) in R^k (any unit mu), k = 2 or 3:
    log I0(kappa) for the circle, log(sinh(kappa) / kappa) for the 2-sphere."""
    if k == 2:
        return torch.special.i0e(kappa).log() + kappa
    if k == 3:
        small = kappa < 1e-4
        safe = torch.where(small, torch.ones_like(kappa), kappa)
        large = safe + torch.log1p(-torch.exp(-2.0 * safe)) - torch.log(2.0 * safe)
        return torch.where(small, kappa ** 2 / 6.0, large)
    raise ValueError(f"sphere dimension k = {k}: only circles (2) and 2-spheres (3)")


def _mean_resultant(kappa: torch.Tensor, k: int) -> torch.Tensor:
    """E[mu.s] under the von Mises-Fisher law exp(kappa mu.s) on S^(k-1): I1/I0 (k = 2), coth - 1/kappa (k = 3)."""
    if k == 2:
        return torch.special.i1e(kappa) / torch.special.i0e(kappa)
    small = kappa < 1e-4
    safe = torch.where(small, torch.ones_like(kappa), kappa)
    return torch.where(small, kappa / 3.0, 1.0 / torch.tanh(safe) - 1.0 / safe)


@dataclass
class SphereMixture:
    """Data on a curved low-dimensional set: a mixture of circles and 2-spheres, x0 = c_k + r_k U_k s with s
    uniform on the unit sphere of R^k (k = 2 or 3) and U_k (D, k) orthonormal columns, in float64.

    The exact denoiser has a closed form: given x and component k, the posterior of s is von Mises-Fisher
    with kappa = r_k |U_k^T (x - c_k)| / sigma^2 about y / |y|, y = U_k^T (x - c_k), so
    E[x0 | x, k] = c_k + r_k A_k(kappa) y / |y| (A_2 = I1 / I0, A_3 = coth - 1 / kappa), and the
    component's noisy density is N-like with the sphere average exp(-(|x - c|^2 + r^2) / 2 sigma^2) *
    E_s[exp(kappa mu.s)] / (2 pi sigma^2)^(D/2). Its covariance has rank at most K (k + 1): every other
    direction of the latent space is empty, so residual noise there costs FD in full."""

    weights: torch.Tensor  # (K,)
    centres: torch.Tensor  # (K, D)
    radii: torch.Tensor  # (K,)
    bases: list  # K tensors (D, k)

    @classmethod
    def random(cls, components: int = 6, shape=LATENT_SHAPE, seed: int = 0,
               radius_range: tuple[float, float] = (1.0, 2.5)) -> "SphereMixture":
        """Alternating 2-spheres and circles in random subspaces, radii uniform in ``radius_range`` times the
        centres' typical norm; rescaled to unit average variance."""
        generator = torch.Generator().manual_seed(seed)
        dims = math.prod(shape)
        weights = torch.rand(components, generator=generator, dtype=torch.float64) + 0.5
        centres = torch.randn(components, dims, generator=generator, dtype=torch.float64)
        low, high = radius_range
        radii = low + (high - low) * torch.rand(components, generator=generator, dtype=torch.float64)
        radii = radii * math.sqrt(dims)  # the centres' typical norm
        bases = [torch.linalg.qr(torch.randn(dims, 3 - i % 2, generator=generator, dtype=torch.float64))[0]
                 for i in range(components)]
        mixture = cls(weights / weights.sum(), centres, radii, bases)
        scale = mixture.covariance().diagonal().mean().sqrt()
        return cls(mixture.weights, centres / scale, radii / scale, bases)

    @property
    def dims(self) -> int:
        return self.centres.shape[1]

    def mean(self) -> torch.Tensor:
        return self.weights @ self.centres

    def covariance(self) -> torch.Tensor:
        """sum_k w_k (r_k^2 / k U_k U_k^T + c_k c_k^T) - m m^T (s uniform on S^(k-1): E s = 0, E s s^T = I / k)."""
        m = self.mean()
        second = (self.centres.T * self.weights) @ self.centres
        for w, r, u in zip(self.weights, self.radii, self.bases):
            second = second + w * r ** 2 / u.shape[1] * (u @ u.T)
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, self.dims, dtype=torch.float64)
        z = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        for k, (c, r, u) in enumerate(zip(self.centres, self.radii, self.bases)):
            chosen = component == k
            s = z[chosen, :u.shape[1]]
            out[chosen] = c + r * (s / s.norm(dim=1, keepdim=True)) @ u.T
        return out

    def _terms(self, x: torch.Tensor, sigma: torch.Tensor):
        """log(w_k p_k,sigma(x)) (B, K), and per component r_k A_k(kappa_k) y_k / |y_k| (B, sum k) in the
        coordinates of the concatenated bases: E[x0 | x, k] = c_k + U_k (that block)."""
        variance = sigma ** 2  # (B,)
        basis = torch.cat(self.bases, 1)  # (D, sum k)
        projected = x @ basis - torch.cat([c @ u for c, u in zip(self.centres, self.bases)])  # y_k, side by side
        distance = (x ** 2).sum(1, keepdim=True) - 2.0 * x @ self.centres.T + (self.centres ** 2).sum(1)  # (B, K)
        logs, blocks, start = [], [], 0
        for i, (w, r, u) in enumerate(zip(self.weights, self.radii, self.bases)):
            k = u.shape[1]
            y = projected[:, start:start + k]
            start += k
            norm = y.norm(dim=1)
            kappa = r * norm / variance
            logs.append(w.log() - 0.5 * (distance[:, i] + r ** 2) / variance
                        - 0.5 * self.dims * torch.log(2.0 * math.pi * variance) + _log_mean_exp_on_sphere(kappa, k))
            blocks.append((r * _mean_resultant(kappa, k) / norm.clamp_min(1e-300))[:, None] * y)
        return torch.stack(logs, 1), torch.cat(blocks, 1)

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._terms(x, sigma)[0], dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """sum_k r_k(x) (c_k + U_k r_k A_k(kappa_k) y_k / |y_k|), r_k the responsibilities."""
        log_terms, blocks = self._terms(x, sigma)
        responsibility = torch.softmax(log_terms, dim=1)
        sizes = [u.shape[1] for u in self.bases]
        weights = torch.repeat_interleave(responsibility, torch.tensor(sizes), dim=1)  # (B, sum k)
        return responsibility @ self.centres + (weights * blocks) @ torch.cat(self.bases, 1).T


# The analytic models the ranking is reported on, each with the sentence docs/quality.md describes it by.
MODELS = {
    "anisotropic": ("mixture of 6 Gaussians with anisotropic diagonal covariances (per-dimension stds "
                    "log-uniform over a 16x range)", lambda seed: GaussianMixture.random(6, seed=seed)),
    "clustered": ("mixture of 32 narrow Gaussians (stds 0.01 to 0.08 of the spread) in 8 tight clusters of 4",
                  lambda seed: GaussianMixture.clustered(8, 4, seed=seed)),
    "spheres": ("data on a curved low-dimensional set: 3 circles and 3 2-spheres of radius 1 to 2.5 times the "
                "centres' typical norm, in random subspaces (covariance rank 20 of 256)",
                lambda seed: SphereMixture.random(6, seed=seed)),
}


class AnalyticDenoiser:
    """What KSAMPLER.sample expects as ``model_wrap`` (ComfyUI's guider): model_wrap(x, sigma, **extra) -> D.

    ``calls`` counts model evaluations; ``inner_model.model_sampling`` is a real ComfyUI object.
    """

    def __init__(self, mixture: GaussianMixture, model_sampling):
        self.mixture = mixture
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)
        self.model_patcher = SimpleNamespace(get_model_object=lambda name: {"model_sampling": model_sampling}[name])
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        self.calls += 1
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        sigma = sigma.to(torch.float64).reshape(-1).expand(x.shape[0])
        return self.mixture.denoise(flat, sigma).reshape(x.shape).to(x.dtype)


def frechet_distance(samples: torch.Tensor, mean: torch.Tensor, covariance_sqrt: torch.Tensor,
                     covariance_trace: float) -> float:
    """||m_s - m||^2 + tr(S + C - 2 (C^1/2 S C^1/2)^1/2) for samples (n, D) against exact (m, C)."""
    samples = samples.reshape(samples.shape[0], -1).to(torch.float64)
    sample_mean = samples.mean(0)
    centred = samples - sample_mean
    sample_cov = centred.T @ centred / (samples.shape[0] - 1)
    product = covariance_sqrt @ sample_cov @ covariance_sqrt
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp_min(0).sqrt().sum()
    return float(((sample_mean - mean) ** 2).sum() + sample_cov.trace() + covariance_trace - 2.0 * cross)


def reference_solution(mixture: GaussianMixture, x_start: torch.Tensor, sigma_start: float,
                       sigma_ends: set[float], steps: int, sigma_floor: float = 1e-4) -> dict[float, torch.Tensor]:
    """The probability-flow ODE dx/dlog(sigma) = x - D(x, sigma) by RK4 on a dense log-sigma grid.

    Returns the state at each sigma in ``sigma_ends`` (all are grid points; 0 is D at sigma_floor,
    whose error is O(sigma_floor^2)).
    """
    ends = {float(s) for s in sigma_ends if s > 0}
    grid = torch.linspace(math.log(sigma_start), math.log(sigma_floor), steps + 1, dtype=torch.float64).tolist()
    grid = sorted(set(grid) | {math.log(s) for s in ends if s < sigma_start}, reverse=True)
    x = x_start.reshape(x_start.shape[0], -1).to(torch.float64)
    ones = x.new_ones(x.shape[0])

    def velocity(x, t):
        return x - mixture.denoise(x, ones * math.exp(t))

    states = {float(s): x.clone() for s in ends if s >= sigma_start}
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        k1 = velocity(x, t)
        k2 = velocity(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = velocity(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = velocity(x + h * k3, t_next)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        for s in ends:
            if math.isclose(math.log(s), t_next, abs_tol=1e-12):
                states[s] = x.clone()
    states[0.0] = mixture.denoise(x, ones * sigma_floor)
    return states


# --------------------------------------------------------------------------------------------
# ComfyUI, the methods and their schedules
# --------------------------------------------------------------------------------------------

def load_comfyui() -> SimpleNamespace:
    """Import the ComfyUI under test (COMFYUI_PATH or PINNED) and load the pack, unless already loaded."""
    sys.path.insert(0, str(REPO / "scripts"))
    from comfyui_runtime import comfyui_label, import_comfy, load_pack

    path = import_comfy()
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # after ComfyUI: its `nodes` module, not the pack's folder
    import comfy.k_diffusion.sampling
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models

    import nodes

    load_pack()
    label = comfyui_label(path)
    extras = {}
    for module_name, class_name in (("nodes_align_your_steps", "AlignYourStepsScheduler"),
                                    ("nodes_gits", "GITSScheduler")):
        try:
            module = __import__(f"comfy_extras.{module_name}", fromlist=[class_name])
            extras[class_name] = getattr(module, class_name)
        except Exception:  # noqa: BLE001  (absent in PINNED)
            pass
    model_sampling = comfy.model_base.model_sampling(comfy.supported_models.SD15({}), comfy.model_base.ModelType.EPS)
    return SimpleNamespace(path=path, label=label, samplers=comfy.samplers, nodes=nodes, extras=extras,
                           model_sampling=model_sampling,
                           current=hasattr(comfy.samplers, "SCHEDULER_HANDLERS"))


def node_output(result):
    """A node's first output, for classic (tuple) and V3 (NodeOutput) nodes."""
    result = getattr(result, "result", result)
    return result[0]


@dataclass
class Method:
    """One sampler + schedule at one step count; ``nfe`` is counted, not assumed."""

    name: str
    family: str
    sampler: str
    scheduler: str
    steps: int
    sigmas: torch.Tensor
    make_sampler: object  # () -> KSAMPLER
    sigma_end: float  # where the returned latent lives
    budget: int | None = None  # the NFE budget it competes at (None: baseline / off budget)
    pack: bool = False
    nfe: int | None = None
    solver: str = ""  # the pack's solver (SCHEDULE_SOLVERS) for the pack's rows


@dataclass
class Config:
    budgets: tuple[int, ...] = (5, 6, 8)
    # Reduced from 5 x 2048 (one model) when the third model came: on the shared 2-core machine one seed of
    # 2048 samples of ComfyUI 0.3.64's 480 rows took 5 min.
    seeds: int = 3
    samples: int = 1024
    reference_steps: int = 100
    models: tuple[str, ...] = ("anisotropic", "clustered", "spheres")  # keys of MODELS
    samplers: tuple[str, ...] | None = None  # None: every core sampler
    schedulers: tuple[str, ...] | None = None  # None: every core scheduler (+ AYS, GITS)
    mixture_seed: int = 0
    threads: int = 1  # more threads make small float64 eigen-solves far slower on a busy machine
    tuned: bool = True  # tune a schedule per budget and solver and report it like any method
    tune_solvers: tuple[str, ...] = ("dpmpp_2m", "dpmpp_1s", "unipc", "unipc_afs")
    tune_probes: int = 128  # probe noises (seed TUNE_SEED + budget: disjoint from the evaluation seeds)
    tune_seconds: float = 60.0  # time budget of each tuning run
    tune_candidates: int | None = None  # cap on schedules per tuning run (None: until converged / time)


TUNE_SEED = 7000  # probe noises for tuning; the evaluation uses seeds 1000 + i

QUICK = Config(budgets=(5, 6, 8), seeds=1, samples=384, reference_steps=80, tune_solvers=("dpmpp_2m", "unipc_afs"),
               tune_probes=32, tune_candidates=40,
               samplers=("euler", "heun", "dpmpp_2m"), schedulers=("karras", "normal"))


class Harness:
    """ComfyUI + the analytic model: builds schedules and runs KSAMPLER.sample, counting evaluations."""

    def __init__(self, comfy: SimpleNamespace, mixture):
        self.comfy = comfy
        self.ms = comfy.model_sampling
        self.use(mixture)
        self.fake_patcher = SimpleNamespace(model_sampling=self.ms, object_patches={"model_sampling": self.ms},
                                            get_model_object=lambda name: {"model_sampling": self.ms}[name])
        inpaint = comfy.samplers.KSamplerX0Inpaint
        forward = getattr(inpaint, "forward", None) or inpaint.__call__
        self.wants_cond = "cond" in inspect.signature(forward).parameters  # PINNED passes cond/uncond/cond_scale

    def use(self, mixture) -> None:
        """Sample the analytic model ``mixture`` from now on (schedules and NFE do not depend on it)."""
        self.mixture = mixture
        self.model = AnalyticDenoiser(mixture, self.ms)

    def extra_args(self, seed: int) -> dict:
        extra = {"model_options": {}, "seed": seed}
        if self.wants_cond:
            extra.update(cond=None, uncond=None, cond_scale=1.0)
        return extra

    def sample(self, method_sampler, sigmas: torch.Tensor, noise: torch.Tensor, seed: int = 0):
        """(latent, model evaluations) of one KSAMPLER.sample run from ``noise``."""
        self.model.calls = 0
        latent = torch.zeros_like(noise)
        with torch.no_grad():
            out = method_sampler.sample(self.model, sigmas.clone(), self.extra_args(seed), None, noise, latent,
                                        None, True)
        return out, self.model.calls

    def start(self, method: Method, noise: torch.Tensor) -> tuple[torch.Tensor, tuple[float, bool]]:
        """The latent KSAMPLER starts from (ComfyUI's own noise scaling) in float64, and a key for it."""
        max_denoise = bool(method.make_sampler().max_denoise(self.model, method.sigmas))
        sigma = method.sigmas[0].double()
        x = self.ms.noise_scaling(sigma, noise.double(), torch.zeros_like(noise, dtype=torch.float64), max_denoise)
        return x, (float(sigma), max_denoise)

    # ---- schedules --------------------------------------------------------------------------
    def ksampler_sigmas(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        """The sigmas ComfyUI's KSampler uses (including its discard-penultimate rule)."""
        ksampler = self.comfy.samplers.KSampler(self.fake_patcher, steps, "cpu", sampler=sampler,
                                                scheduler=scheduler, denoise=1.0)
        return ksampler.sigmas.cpu().float()

    def extra_sigmas(self, scheduler: str, steps: int) -> torch.Tensor:
        """AYS (SD1 levels) and GITS (coeff 1.20) through their core nodes, as SamplerCustom uses them."""
        node = self.comfy.extras[scheduler]
        if scheduler == "AlignYourStepsScheduler":
            return node_output(node().get_sigmas("SD1", steps, 1.0)).float()
        return node_output(node.execute(1.20, steps, 1.0)).float()

    def pack_sigmas(self, recipe: str, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2, params=""):
        node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepSigmas"]()
        return node_output(node.get_sigmas(self.fake_patcher, recipe, 1.0, steps, base_steps, base_rho,
                                           end_index, time_rho, params=params)).float()

    def pack_sampler(self, solver: str, finish: str):
        """The pack's sampler as a user wires it: UniPC through Few-Step UniPC Sampler (order auto, bh1, noise
        form, afs on for "unipc_afs", as the UniPC recipes say), DPM++ by its KSampler name or, with
        finish = denoised, through Few-Step DPM++ Sampler."""
        if solver in ("unipc", "unipc_afs"):
            node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepUniPCSampler"]()
            return node_output(node.get_sampler("auto", "bh1", solver == "unipc_afs", finish))
        if finish == "last_sigma":  # the registered KSampler names
            return self.comfy.samplers.sampler_object(f"fewstep_{solver}")
        node = self.comfy.nodes.NODE_CLASS_MAPPINGS["FewStepDPMPPSampler"]()
        return node_output(node.get_sampler(solver, finish))

    # ---- method lists ------------------------------------------------------------------------
    def core_samplers(self, wanted) -> tuple[list[str], dict[str, str]]:
        """Deterministic core samplers to compare, and the reason each other one is left out."""
        names = [n for n in self.comfy.samplers.SAMPLER_NAMES if n not in PACK_SAMPLERS]
        skipped = {}
        chosen = []
        for name in names:
            if wanted is not None and name not in wanted:
                continue
            if name in EXCLUDED:
                skipped[name] = EXCLUDED[name]
            elif name.endswith("_cfg_pp"):
                skipped[name] = CFG_PP_REASON
            else:
                reason = self.stochastic_or_broken(name)
                if reason:
                    skipped[name] = reason
                else:
                    chosen.append(name)
        return chosen, skipped

    def stochastic_or_broken(self, name: str) -> str | None:
        """Run a sampler twice from the same noise with different seeds: a different result means it
        injects noise (ancestral / SDE), so it does not solve the probability-flow ODE."""
        sigmas = self.ksampler_sigmas(name, "karras", 4)
        noise = torch.randn((2, *LATENT_SHAPE), generator=torch.Generator().manual_seed(5))
        try:
            outputs = []
            for seed in (1, 2):
                torch.manual_seed(100 + seed)
                outputs.append(self.sample(self.comfy.samplers.sampler_object(name), sigmas, noise, seed)[0])
        except Exception as error:  # noqa: BLE001
            return f"fails on the analytic model: {type(error).__name__}: {error}"
        if not torch.equal(outputs[0], outputs[1]):
            return "stochastic (injects noise: ancestral / SDE); the proxy compares deterministic ODE solutions"
        return None

    def core_schedulers(self, wanted) -> list[str]:
        names = [n for n in self.comfy.samplers.SCHEDULER_NAMES if n not in PACK_SCHEDULERS]
        names += list(self.comfy.extras)
        return [n for n in names if wanted is None or n in wanted]

    def core_sigmas(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        if scheduler in self.comfy.extras:
            return self.extra_sigmas(scheduler, steps)
        return self.ksampler_sigmas(sampler, scheduler, steps)

    def probe_nfe(self, make_sampler, sigmas: torch.Tensor) -> int:
        noise = torch.randn((1, *LATENT_SHAPE), generator=torch.Generator().manual_seed(3))
        return self.sample(make_sampler(), sigmas, noise)[1]

    def core_method(self, sampler: str, scheduler: str, budget: int) -> Method | str:
        """The most steps whose counted NFE fits the budget, or the reason there is none."""
        make = partial(self.comfy.samplers.sampler_object, sampler)
        last_error = "too many evaluations"
        for steps in range(budget, 0, -1):
            try:
                sigmas = self.core_sigmas(sampler, scheduler, steps)
                nfe = self.probe_nfe(make, sigmas)
            except Exception as error:  # noqa: BLE001
                last_error = f"{type(error).__name__}: {error}"
                continue
            if nfe <= budget:
                return Method(f"{sampler} / {short(scheduler)}", sampler, sampler, short(scheduler), steps, sigmas,
                              make, end_sigma(sampler, sigmas), budget, nfe=nfe)
        return f"no step count fits NFE <= {budget} ({last_error})"

    def pack_methods(self, budgets) -> list[Method]:
        """The recipes (identical schedules merged) with finish=last_sigma at NFE N and finish=denoised at N+1,
        and the pack's step-count family + denoised where a budget has no named recipe at N-1."""
        from fewstep.recipes import RECIPES, recipe_for_step_count

        groups: dict[tuple, list[str]] = {}
        for name, r in RECIPES.items():
            groups.setdefault((r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho, r.solver), []).append(name)
        methods = []
        for names in groups.values():
            recipe = RECIPES[names[0]]
            label = "/".join(n.split()[0] for n in names) + " " + " ".join(names[0].split()[1:])
            sigmas = self.pack_sigmas(names[0])
            for finish in ("last_sigma", "denoised"):
                nfe = recipe.steps + (finish == "denoised")
                methods.append(self._pack_method(f"FewStep {label}", recipe.solver, finish, recipe.steps, sigmas,
                                                 nfe if nfe in budgets else None))
        covered = {m.nfe for m in methods if m.budget is not None and m.family == "FewStep + denoised"}
        for budget in budgets:
            if budget not in covered and budget >= 2:
                r = recipe_for_step_count(budget - 1)
                sigmas = self.pack_sigmas("custom", r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho)
                methods.append(self._pack_method(f"FewStep scheduler {r.steps}-step", r.solver, "denoised",
                                                 r.steps, sigmas, budget))
        return methods

    def tuned_methods(self, config: "Config") -> tuple[list[Method], list["Tuning"]]:
        """Tune a schedule per budget and solver on probe noises (not the evaluation noises), then make
        each a method whose sigmas come from Few-Step Sigmas' `params` input, as a user would paste them."""
        from fewstep.tuner import denoiser_run, tune

        sigma_max = self.ms.sigma_max.double()
        table = self.ms.sigmas.double().cpu()
        methods, tunings = [], []
        for budget in config.budgets:
            generator = torch.Generator().manual_seed(TUNE_SEED + budget)
            noise = torch.randn((config.tune_probes, *LATENT_SHAPE), generator=generator)
            x_start = self.ms.noise_scaling(sigma_max, noise.double(), torch.zeros_like(noise, dtype=torch.float64),
                                            True).float()
            for solver in config.tune_solvers:
                result = tune(denoiser_run(self.model, x_start, sigma_table=table), table, budget, solver,
                              time_budget=config.tune_seconds, max_candidates=config.tune_candidates)
                sigmas = self.pack_sigmas("custom", params=result.text)
                if not torch.equal(sigmas, result.sigmas.float()):
                    raise AssertionError(f"Few-Step Sigmas does not reproduce the tuned schedule {result.text}")
                tunings.append(Tuning(budget, solver, result))
                log.info("tuned NFE %d %s: %.4f -> %.4f in %.1f s (%d schedules, %s)", budget, solver,
                         result.start_objective, result.objective, result.seconds, result.candidates,
                         result.stopped_by)
                method = self._pack_method(f"FewStep tuned ({solver})", solver, "last_sigma", budget, sigmas, budget)
                method.family = f"FewStep tuned ({solver})"
                methods.append(method)
        return methods, tunings

    def _pack_method(self, label, solver, finish, steps, sigmas, budget) -> Method:
        denoised = finish == "denoised"
        unipc = " UniPC" if solver.startswith("unipc") else ""
        method = Method(label + (" + denoised" if denoised else ""),
                        f"FewStep{unipc} + denoised" if denoised else f"FewStep{unipc} (last sigma)",
                        f"fewstep_{solver}" + (" +denoised" if denoised else ""), "FewStep recipe", steps, sigmas,
                        lambda: self.pack_sampler(solver, finish), 0.0 if denoised else float(sigmas[-1]),
                        budget, pack=True, solver=solver)
        method.nfe = self.probe_nfe(method.make_sampler, sigmas)
        return method


def short(scheduler: str) -> str:
    return {"AlignYourStepsScheduler": "AYS (SD1)", "GITSScheduler": "GITS (1.20)"}.get(scheduler, scheduler)


def end_sigma(sampler: str, sigmas: torch.Tensor) -> float:
    """The noise level of the latent a sampler returns for this schedule."""
    if float(sigmas[-1]) == 0.0:
        if sampler in STOP_AT_LAST_NONZERO:
            return float(sigmas[-2])
        if sampler.startswith("uni_pc"):
            return UNI_PC_END
    return float(sigmas[-1])


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    method: Method
    fd: list[float] = field(default_factory=list)
    rms_end: list[float] = field(default_factory=list)
    rms_zero: list[float] = field(default_factory=list)

    @staticmethod
    def stats(values: list[float]) -> tuple[float, float]:
        """Mean and 95% half-width (1.96 sd / sqrt(n)); 0 with one seed."""
        t = torch.tensor(values, dtype=torch.float64)
        half = 1.96 * float(t.std()) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        return float(t.mean()), half


@dataclass
class Tuning:
    """One tuning run of the schedule tuner (objective: mean per-probe RMS at 0)."""

    budget: int
    solver: str
    result: TuneResult  # its output string, objectives and cost


@dataclass
class Results:
    config: Config
    label: str
    rows: list[Row]
    skipped_samplers: dict[str, str]
    unfit: dict[str, str]  # method @ budget -> reason
    floor: Row  # exact samples from the mixture: FD's finite-sample floor
    reference_check: float  # RMS(ref_N - ref_N/2) at sigma 0 (seed 0)
    seconds: float
    machine: str
    tunings: list[Tuning] = field(default_factory=list)
    model: str = "anisotropic"  # the key of MODELS

    def table(self, budget: int | None) -> list[Row]:
        rows = [r for r in self.rows if r.method.budget == budget and r.method.family != "baseline"]
        return sorted(rows, key=lambda r: (not math.isfinite(Row.stats(r.fd)[0]), Row.stats(r.fd)[0]))

    def baseline(self) -> Row:
        return next(r for r in self.rows if r.method.family == "baseline")

    def off_budget(self) -> list[Row]:
        return [r for r in self.rows if r.method.budget is None and r.method.family != "baseline"]


@dataclass
class Suite:
    """One run: the same methods ranked on each analytic model of ``config.models``."""

    config: Config
    label: str
    models: list[Results]
    seconds: float
    machine: str

    def model(self, name: str) -> Results:
        return next(r for r in self.models if r.model == name)


def plan(harness: Harness, config: Config) -> tuple[list[Method], dict[str, str], dict[str, str]]:
    """Every method but the tuned ones (which are tuned per model): their schedules and counted NFE."""
    samplers, skipped = harness.core_samplers(config.samplers)
    schedulers = harness.core_schedulers(config.schedulers)
    methods, unfit = [], {}
    for budget in config.budgets:
        for sampler in samplers:
            for scheduler in schedulers:
                method = harness.core_method(sampler, scheduler, budget)
                if isinstance(method, str):
                    unfit[f"{sampler} / {short(scheduler)} @ {budget}"] = method
                else:
                    methods.append(method)
    methods += harness.pack_methods(config.budgets)
    sampler, scheduler, steps = BASELINE
    sigmas = harness.ksampler_sigmas(sampler, scheduler, steps)
    make = partial(harness.comfy.samplers.sampler_object, sampler)
    methods.append(Method(f"{sampler} / {scheduler}, {steps} steps (baseline)", "baseline", sampler, scheduler,
                          steps, sigmas, make, end_sigma(sampler, sigmas), None,
                          nfe=harness.probe_nfe(make, sigmas)))
    return methods, skipped, unfit


def run(config: Config = Config(), comfy: SimpleNamespace | None = None) -> Suite:
    """Plan the methods once, then per analytic model tune the schedules and score every method."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, comfy or load_comfyui())
    finally:
        torch.set_num_threads(threads)


def _run(config: Config, comfy: SimpleNamespace) -> Suite:
    began = time.perf_counter()
    harness = Harness(comfy, MODELS[config.models[0]][1](config.mixture_seed))
    methods, skipped, unfit = plan(harness, config)
    log.info("planned %d methods (%.0f s)", len(methods), time.perf_counter() - began)
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} torch thread(s); Python {platform.python_version()}, "
               f"torch {torch.__version__}")
    models = []
    for name in config.models:
        model_began = time.perf_counter()
        harness.use(MODELS[name][1](config.mixture_seed))
        tuned_rows, tunings = harness.tuned_methods(config) if config.tuned else ([], [])
        rows, floor, reference_check = evaluate(harness, config, methods + tuned_rows, name)
        models.append(Results(config, comfy.label, rows, skipped, unfit, floor, reference_check,
                              time.perf_counter() - model_began, machine, tunings, name))
    return Suite(config, comfy.label, models, time.perf_counter() - began, machine)


def evaluate(harness: Harness, config: Config, methods: list[Method], name: str) -> tuple[list[Row], Row, float]:
    """For each seed solve the reference ODE and score every method on the harness's current model."""
    began = time.perf_counter()
    mixture = harness.mixture
    rows = [Row(m) for m in methods]
    floor = Row(Method("exact samples of the model", "floor", "-", "-", 0, torch.zeros(1), None, 0.0))
    mean, covariance = mixture.mean(), mixture.covariance()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    covariance_sqrt = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    trace = float(covariance.trace())
    reference_check = float("nan")
    for seed in range(config.seeds):
        generator = torch.Generator().manual_seed(1000 + seed)
        noise = torch.randn((config.samples, *LATENT_SHAPE), generator=generator)
        floor.fd.append(frechet_distance(mixture.sample(config.samples, generator), mean, covariance_sqrt, trace))
        starts = {}  # (sigma_0, max_denoise) -> (start latent, sigmas where a method stops)
        for row in rows:
            x_start, key = harness.start(row.method, noise)
            starts.setdefault(key, (x_start, set()))[1].update({row.method.sigma_end, 0.0})
        references = {}
        for key, (x_start, ends) in starts.items():
            references[key] = reference_solution(mixture, x_start, key[0], ends, config.reference_steps)
            if seed == 0 and math.isnan(reference_check):
                coarse = reference_solution(mixture, x_start, key[0], set(), config.reference_steps // 2)
                reference_check = float((coarse[0.0] - references[key][0.0]).pow(2).mean().sqrt())
        for row in rows:
            m = row.method
            out, nfe = harness.sample(m.make_sampler(), m.sigmas, noise, seed)
            if nfe != m.nfe:
                raise AssertionError(f"{m.name}: {nfe} evaluations, planned {m.nfe}")
            states = references[harness.start(m, noise)[1]]
            flat = out.reshape(out.shape[0], -1).to(torch.float64)
            row.fd.append(frechet_distance(flat, mean, covariance_sqrt, trace))
            row.rms_end.append(float((flat - states[m.sigma_end]).pow(2).mean().sqrt()))
            row.rms_zero.append(float((flat - states[0.0]).pow(2).mean().sqrt()))
        log.info("%s: seed %d done (%.0f s)", name, seed, time.perf_counter() - began)
    return rows, floor, reference_check


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

def fmt(values: list[float], digits: int = 3) -> str:
    mean, half = Row.stats(values)
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}g} ± {half:.2g}" if half else f"{mean:.{digits}g}"


HEADER = "| rank | method | steps | NFE | σ end | FD (95% CI) | FD − #1 (paired) | RMS at σ end | RMS at 0 |"
RULE = "|---:|---|---:|---:|---:|---|---|---:|---:|"


def paired(row: Row, first: Row | None) -> str:
    """FD difference to the budget's winner, seed by seed (all methods share each seed's noise)."""
    if first is None or first is row:
        return "-"
    return fmt([a - b for a, b in zip(row.fd, first.fd)], 2)


def row_line(rank, row: Row, first: Row | None = None) -> str:
    m = row.method
    name = f"**{m.name}**" if m.pack else m.name
    return (f"| {rank} | {name} | {m.steps} | {m.nfe} | {m.sigma_end:.4g} | {fmt(row.fd)} | {paired(row, first)} | "
            f"{Row.stats(row.rms_end)[0]:.4f} | {Row.stats(row.rms_zero)[0]:.4f} |")


def tuned(method: Method) -> bool:
    return method.family.startswith("FewStep tuned")


def runner_up(table: list[Row]) -> str:
    """'#2 name FD, #2 − #1 paired' for a budget's table."""
    if len(table) < 2:
        return "no runner-up"
    return f"#2 {table[1].method.name} FD {fmt(table[1].fd)}, #2 − #1 paired {paired(table[1], table[0])}"


def target(results: Results, budget: int) -> tuple[bool, str]:
    """Whether a Few-Step method (recipe or tuned schedule) is first at ``budget``, and the line that says so:
    with the paired interval to the runner-up, or the best Few-Step row's paired gap to the winner."""
    table = results.table(budget)
    winner = table[0]
    if winner.method.pack:
        return True, f"#1 **{winner.method.name}** FD {fmt(winner.fd)}; {runner_up(table)}"
    rank, best = next((i + 1, r) for i, r in enumerate(table) if r.method.pack)
    return False, (f"#1 {winner.method.name} FD {fmt(winner.fd)} (not Few-Step); best Few-Step **{best.method.name}** "
                   f"rank {rank}, FD {fmt(best.fd)}, paired vs #1 {paired(best, winner)}")


def headline(results: Results) -> list[str]:
    lines = []
    for budget in results.config.budgets:
        table = results.table(budget)
        winner = table[0]
        lines.append(f"NFE {budget}: " + target(results, budget)[1])
        for kind, wanted in (("recipe", lambda m: m.pack and not tuned(m)), ("tuned", tuned)):
            ours = [(i + 1, r) for i, r in enumerate(table) if wanted(r.method)]
            if ours:
                rank, best = ours[0]
                lines.append(f"NFE {budget}: our best {kind} {best.method.name} FD {fmt(best.fd)} (rank {rank} of "
                             f"{len(table)}, {paired(best, winner)} paired vs #1)")
    base = results.baseline()
    lines.append(f"baseline {base.method.name}: NFE {base.method.nfe}, FD {fmt(base.fd)}; "
                 f"exact-sample floor FD {fmt(results.floor.fd)}")
    return lines


TABLE_ROWS = 30  # rows of each ranking written to docs/quality.md (every Few-Step row is written too)


def markdown_model(results: Results) -> list[str]:
    c = results.config
    out = [f"### Model: {results.model}", "",
           f"{MODELS[results.model][0]}; {results.seconds:.0f} s (tuning included). Reference RK4 with "
           f"{c.reference_steps} log-sigma steps (RMS change against half as many steps: "
           f"{results.reference_check:.1e}).", "", "Headline:", ""]
    out += [f"- {line}" for line in headline(results)]
    for budget in c.budgets:
        table = results.table(budget)
        out += ["", f"#### {results.model}, NFE budget {budget}", "", HEADER, RULE]
        out += [row_line(i + 1, r, table[0]) for i, r in enumerate(table) if i < TABLE_ROWS or r.method.pack]
        if len(table) > TABLE_ROWS:
            out += ["", f"{len(table)} rows; core rows below rank {TABLE_ROWS} are left out here "
                        "(`python benchmarks/quality.py` prints them all)."]
    if results.tunings:
        out += ["", f"#### {results.model}, tuned schedules", "",
                f"Tuned by `fewstep/tuner.py` on {c.tune_probes} probe noises (seed {TUNE_SEED} + budget, disjoint "
                f"from the evaluation seeds), time budget {c.tune_seconds:.0f} s each; objective: mean per-probe RMS "
                "of x_N to a 40-step DPM++2M solution at sigma 0. The string is what the rows above pasted into "
                "Few-Step Sigmas' `params`.", "",
                "| NFE | solver | objective: recipe -> tuned | schedules | model evaluations | seconds | stopped "
                "| params |",
                "|---:|---|---|---:|---:|---:|---|---|"]
        for t in results.tunings:
            r = t.result
            out.append(f"| {t.budget} | {t.solver} | {r.start_objective:.4f} -> {r.objective:.4f} | {r.candidates} | "
                       f"{r.model_evaluations} | {r.seconds:.1f} | {r.stopped_by} | `{r.text}` |")
    out += ["", f"#### {results.model}, reference rows", "", HEADER, RULE, row_line("-", results.baseline())]
    out += [row_line("-", r) for r in results.off_budget()]
    f = results.floor
    out += [f"| - | {f.method.name} (FD floor at this sample size) | - | - | 0 | {fmt(f.fd)} | - | - | - |", ""]
    return out


def markdown(suite: Suite) -> str:
    c = suite.config
    first = suite.models[0]
    out = [f"## {suite.label}", "",
           f"Run {datetime.date.today().isoformat()} on {suite.machine}; {suite.seconds:.0f} s in all. "
           f"{c.seeds} seeds x {c.samples} samples per model, latents {LATENT_SHAPE}; models: "
           + ", ".join(r.model for r in suite.models) + ".", "",
           "Target: a Few-Step method (recipe or tuned schedule) first at every budget on every model.", "",
           "| model | NFE | Few-Step first? | #1, and #2 with the paired difference #2 − #1 "
           "(or the best Few-Step row) |",
           "|---|---:|---|---|"]
    for results in suite.models:
        for budget in c.budgets:
            met, line = target(results, budget)
            out.append(f"| {results.model} | {budget} | {'yes' if met else '**no**'} | {line} |")
    out.append("")
    for results in suite.models:
        out += markdown_model(results)
    if first.skipped_samplers:
        out += ["### Core samplers left out", ""]
        out += [f"- `{name}`: {reason}" for name, reason in first.skipped_samplers.items()]
        out += [""]
    if first.unfit:
        out += ["### Pairs with no step count inside a budget", ""]
        out += [f"- {name}: {reason}" for name, reason in first.unfit.items()]
        out += [""]
    return "\n".join(out)


INTRO = """# Quality proxy: the recipes against ComfyUI's samplers

Generated by `python benchmarks/quality.py` (see its docstring); do not edit by hand. Each ComfyUI
version the script was run against keeps its own section below; the figure `quality.png` is from
the last run.

What it measures. The "model" is a data distribution in the SD latent shape 4 x 8 x 8 whose denoiser
D(x, sigma) = E[x0 | x] is known exactly, scaled to average variance 1 like scaled SD latents. The
ranking is reported on each of three such models separately, because a method that is best on one
model only is not the best:

- **anisotropic**: a mixture of 6 Gaussians with anisotropic diagonal covariances (per-dimension
  standard deviations log-uniform over a 16x range);
- **clustered**: a mixture of 32 narrow Gaussians (standard deviations 0.01 to 0.08 of the spread) in
  8 tight clusters of 4: almost all of the variance lies between components, so the denoiser switches
  sharply between them at low sigma;
- **spheres**: data on a curved low-dimensional set, 3 circles and 3 2-spheres in random subspaces
  (covariance rank 20 of 256). Given a component, the posterior over the sphere is von Mises-Fisher,
  so the denoiser is closed-form (Bessel-function ratios, coth - 1/kappa); every direction off the
  spheres is empty, so noise left there counts in full.

Each runs through ComfyUI's real `KSAMPLER.sample` with a real SD1.5 discrete EPS `model_sampling` (noise
scaling, schedules from `KSampler` including its discard-penultimate rule, AYS and GITS from their
core nodes, the recipes from the pack's Few-Step Sigmas node, the DPM++ recipes through the pack's
KSampler names / Few-Step DPM++ Sampler, the UniPC recipes through Few-Step UniPC Sampler with order
auto, bh1, noise form and afs as the recipe says); model evaluations are counted. A
method competes at a budget with the most steps whose counted NFE fits it (heun at 5 NFE is 3 steps:
its last step to sigma 0 is a single Euler evaluation). The recipes run without FreeU (it needs a
UNet); SD1.5 6-step and SDXL 6-step then coincide. "+ denoised" adds one evaluation at the last sigma
(finish = denoised) and competes at N+1. "FewStep tuned (solver)" is a schedule the pack's tuner found
for that model, budget and solver on probe noises disjoint from the evaluation noises, pasted into
Few-Step Sigmas' `params` and sampled with the pack's sampler for that solver.

- FD: Frechet distance of the samples to the exact model (mean and full 256 x 256 covariance);
  mean ± 1.96 sd / sqrt(seeds). Every method gets the same noise in a seed, so most of that spread
  is shared: "FD − #1 (paired)" is the seed-by-seed difference to the budget's winner with its own
  interval, the number to read when two methods' intervals overlap. The last row of each model's
  reference table is the FD of exact samples, the floor a perfect sampler would reach at this
  sample size.
- RMS at σ end / at 0: RMS distance to an RK4 solution of the same probability-flow ODE from the
  same start latent, at the sigma where the method stops and at sigma 0. A schedule that stops above
  0 (the recipes' default) keeps its residual noise in "RMS at 0" and in FD: the paper relies on
  the VAE to tolerate it, which this proxy cannot see.

Sample size, deliberately reduced: 3 seeds x 1024 samples per model, 128 probe noises and at most 60 s
per tuning run (it was 5 x 2048 and 256 probes on the one model before): on the shared 2-core machine
one seed of 2048 samples of 0.3.64's 480 rows took about 5 minutes, so three models at the old size would
have taken well over an hour per version. With 1024 samples in 256 dimensions the FD floor is higher
(the exact-sample row) and the intervals wider; the paired column is what separates methods. Each
section gives the run's total time, tuning included (`nice -n 10 python benchmarks/quality.py`, and with
`COMFYUI_PATH` for 0.3.64; both ran at the same time on that machine).
"""


def write_docs(suite: Suite) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from comfyui_runtime import write_version_section

    write_version_section(DOCS / "quality.md", INTRO, "quality", suite.label, markdown(suite))
    plot(suite, DOCS / "quality.png")


PACK_COLORS = {"FewStep (last sigma)": "crimson", "FewStep + denoised": "black",
               "FewStep UniPC (last sigma)": "darkorange", "FewStep UniPC + denoised": "saddlebrown",
               "FewStep tuned (dpmpp_2m)": "darkgreen", "FewStep tuned (dpmpp_1s)": "limegreen",
               "FewStep tuned (unipc)": "blue", "FewStep tuned (unipc_afs)": "deepskyblue"}


def plot(suite: Suite, path: Path) -> None:
    """FD against NFE, one panel per model: each core sampler with its best scheduler per budget, the
    pack's recipes (best per family) and tuned schedules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(suite.models), figsize=(5.2 * len(suite.models) + 3, 5.5), squeeze=False)
    palette = plt.get_cmap("tab20").colors
    for ax, results in zip(axes[0], suite.models):
        families: dict[str, dict[int, float]] = {}
        for row in results.rows:
            m = row.method
            if m.family == "baseline":
                continue
            fd = Row.stats(row.fd)[0]
            if math.isfinite(fd):
                best = families.setdefault(m.family, {})
                x = m.nfe if m.pack else m.budget
                best[x] = min(fd, best.get(x, math.inf))
        ordered = sorted(families.items(), key=lambda item: (item[0].startswith("FewStep"), item[0]))
        for i, (family, points) in enumerate(ordered):
            xs = sorted(points)
            pack = family in PACK_COLORS
            ax.plot(xs, [points[x] for x in xs], marker="o", linewidth=2.2 if pack else 0.8,
                    color=PACK_COLORS.get(family, palette[i % len(palette)]), alpha=1.0 if pack else 0.6,
                    label=family + ("" if pack else " (best scheduler)"))
        base = results.baseline()
        ax.axhline(Row.stats(base.fd)[0], color="dimgray", linestyle="--",
                   label=f"{base.method.name}, NFE {base.method.nfe}")
        ax.axhline(Row.stats(results.floor.fd)[0], color="gray", linestyle=":", label="exact samples (FD floor)")
        ax.set_yscale("log")
        ax.set_xticks(sorted({x for points in families.values() for x in points}))
        ax.set_xlabel("model evaluations (NFE)")
        ax.set_title(f"model: {results.model}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("Frechet distance to the exact model")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"Quality proxy (analytic models, 4x8x8), {suite.label.split(' (')[0]}")
    fig.tight_layout(rect=(0, 0, 1 - 2.9 / (5.2 * len(suite.models) + 3), 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_tables(suite: Suite) -> None:
    print(f"\n{suite.label}: {suite.seconds:.0f} s")
    for results in suite.models:
        for budget in results.config.budgets:
            print(f"\n{results.model}, NFE budget {budget}")
            print(f"{'rank':>4}  {'method':<52} {'steps':>5} {'NFE':>3} {'sigma_end':>9}  {'FD':<20} "
                  f"{'paired vs #1':<16} {'RMS@end':>8} {'RMS@0':>8}")
            table = results.table(budget)
            for i, row in enumerate(table):
                m = row.method
                print(f"{i + 1:>4}{'*' if m.pack else ' '} {m.name:<52} {m.steps:>5} {m.nfe:>3} "
                      f"{m.sigma_end:>9.4g}  {fmt(row.fd):<20} {paired(row, table[0]):<16} "
                      f"{Row.stats(row.rms_end)[0]:>8.4f} {Row.stats(row.rms_zero)[0]:>8.4f}")
    for results in suite.models:
        print(f"\n{results.model} ({results.seconds:.0f} s):")
        for line in headline(results):
            print(line)
    skipped = suite.models[0].skipped_samplers
    if skipped:
        print("\nleft out: " + ", ".join(skipped))


def main(argv=None) -> Suite:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few methods, one seed, no docs (the smoke test)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/quality.md and docs/quality.png")
    parser.add_argument("--no-tuned", action="store_true", help="leave out the tuned schedules (no tuning runs)")
    parser.add_argument("--tune-seconds", type=float, help="time budget of each tuning run")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = QUICK if options.quick else Config()
    if options.seeds:
        config = replace(config, seeds=options.seeds)
    if options.samples:
        config = replace(config, samples=options.samples)
    if options.models:
        models = tuple(options.models.split(","))
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            parser.error(f"--models: {unknown} not in {list(MODELS)}")
        config = replace(config, models=models)
    if options.no_tuned:
        config = replace(config, tuned=False)
    if options.tune_seconds:
        config = replace(config, tune_seconds=options.tune_seconds)
    suite = run(config)
    print_tables(suite)
    if not (options.quick or options.no_docs):
        write_docs(suite)
        print(f"\nwrote {DOCS / 'quality.md'} and {DOCS / 'quality.png'}")
    return suite


if __name__ == "__main__":
    main()
