"""The quality benchmark's analytic models: data distributions whose denoiser E[x0 | x] is exact and cheap.

A Gaussian mixture's noisy marginal at sigma is the same mixture with covariances Sigma_k + sigma^2 I; on a
sphere the posterior of the point given x is von Mises-Fisher. Here are the models (MODELS), the adapter that
plugs one into ComfyUI's sampling path (AnalyticDenoiser), the Frechet distance against a model's exact
moments, and the RK4 reference solution of the probability-flow ODE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

LATENT_SHAPE = (4, 8, 8)


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
        """Dimensions of a flattened latent."""
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        """Exact mean: sum_k w_k mu_k."""
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
        """Dimensions of a flattened latent."""
        return self.centres.shape[1]

    def mean(self) -> torch.Tensor:
        """Exact mean: sum_k w_k c_k (each sphere is centred on c_k)."""
        return self.weights @ self.centres

    def covariance(self) -> torch.Tensor:
        """sum_k w_k (r_k^2 / k U_k U_k^T + c_k c_k^T) - m m^T (s uniform on S^(k-1): E s = 0, E s s^T = I / k)."""
        m = self.mean()
        second = (self.centres.T * self.weights) @ self.centres
        for w, r, u in zip(self.weights, self.radii, self.bases):
            second = second + w * r ** 2 / u.shape[1] * (u @ u.T)
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples (n, D)."""
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
        """log p_sigma(x) of the noisy marginal (B,), for x (B, D) and sigma (B,)."""
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
    if not torch.isfinite(samples).all():
        return math.inf  # a sampler that diverged (nan / inf samples) is as far as it gets, not an eigh failure
    sample_mean = samples.mean(0)
    centred = samples - sample_mean
    sample_cov = centred.T @ centred / (samples.shape[0] - 1)
    product = covariance_sqrt @ sample_cov @ covariance_sqrt
    symmetric = (product + product.T) / 2
    try:
        cross = torch.linalg.eigvalsh(symmetric).clamp_min(0).sqrt().sum()
    except torch.linalg.LinAlgError:  # ill-conditioned: singular values of a symmetric PSD matrix are its eigenvalues
        cross = torch.linalg.svdvals(symmetric).sqrt().sum()
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
