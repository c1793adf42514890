"""The quality benchmark's trained models: the proxy networks of ``benchmarks/proxies`` as real ComfyUI models.

Each proxy (``proxies.models.PROXIES``) is loaded as a ComfyUI ``ModelPatcher`` with its own model_sampling (eps
or v, SD1.5's table or its zero-terminal-SNR rescale) and sampled through ``comfy.sample.sample_custom``: noise
scaling, conditioning and classifier-free guidance by ComfyUI, exactly as for a checkpoint. A proxy sampled at
several guidance scales is one benchmark model per scale (``digits_cond`` at cfg 1 and cfg 5). Model evaluations
are counted at the sampler: one evaluation is one call of the guided denoiser, whatever CFG batches inside it.

The reference a trained model is scored against is its own converged distribution: DPM++2M (ComfyUI's
``dpmpp_2m``) on KSampler's Karras schedule with REFERENCE_STEPS steps to sigma 0, from the same noises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch

REFERENCE_SOLVER = ("dpmpp_2m", "karras")
CLASSES = 10


@contextmanager
def torch_threads(count: int | None):
    """Run the block on ``count`` torch threads (None or 0: as they are), and give the caller's back after it."""
    threads = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TrainedModel:
    """One benchmark model made of a proxy network and a guidance scale."""

    key: str  # the benchmark's name for it
    proxy: str  # the key of proxies.models.PROXIES
    cfg: float
    description: str


def trained_models() -> dict[str, TrainedModel]:
    """Every proxy at every guidance scale it lists (``proxies.models`` imports neither ComfyUI nor scikit-learn)."""
    from proxies.models import PROXIES

    models = {}
    for spec in PROXIES.values():
        for cfg in spec.cfgs:
            key = spec.name if len(spec.cfgs) == 1 else f"{spec.name}_cfg{cfg:g}"
            table = "zero-terminal-SNR SD1.5 table" if spec.zsnr else "SD1.5 table"
            kind = "class-conditional, " if spec.conditional else ""
            models[key] = TrainedModel(key, spec.name, cfg, f"trained proxy: {kind}{spec.prediction}-prediction on the "
                                                             f"{table}, cfg {cfg:g}")
    return models


class _Counted:
    """A guided denoiser (ComfyUI's model_k) that counts its calls and passes every attribute through."""

    def __init__(self, model, counter: list[int]):
        self._model, self._counter = model, counter

    def __call__(self, *args, **kwargs):
        self._counter[0] += 1
        return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


class TrainedTarget:
    """A trained proxy at one guidance scale, sampled through ComfyUI's ``sample_custom``."""

    def __init__(self, comfy, model: TrainedModel, patcher=None, threads: int | None = None):
        from proxies.comfy_model import load_proxy
        from proxies.models import PROXIES

        self.comfy, self.model = comfy, model
        self.spec = PROXIES[model.proxy]
        self.patcher = patcher if patcher is not None else load_proxy(model.proxy)
        self.ms = self.patcher.model.model_sampling
        self.latent_shape = tuple(self.spec.latent_shape)
        self._conds: dict[int, tuple] = {}
        self.threads = threads  # torch threads while the network runs (None: as the caller set them)

    def conds(self, batch: int) -> tuple[list, list]:
        """(positive, negative) for a batch: the conditional proxy gets classes 0..9 in turn."""
        if batch not in self._conds:
            from proxies.comfy_model import proxy_conds

            labels = torch.arange(batch) % CLASSES if self.spec.conditional else None
            self._conds[batch] = proxy_conds(self.model.proxy, labels, batch)
        return self._conds[batch]

    def _sample_custom(self, sampler, sigmas: torch.Tensor, noise: torch.Tensor, seed: int) -> torch.Tensor:
        import comfy.sample

        positive, negative = self.conds(noise.shape[0])
        with torch_threads(self.threads), torch.no_grad():
            out = comfy.sample.sample_custom(self.patcher, noise, self.model.cfg, sampler, sigmas.clone(), positive,
                                             negative, torch.zeros_like(noise), disable_pbar=True, seed=seed)
        return out.cpu()

    def sample(self, sampler, sigmas: torch.Tensor, noise: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, int]:
        """(latent, model evaluations) of one run of a KSAMPLER from ``noise`` through sample_custom."""
        counter = [0]
        inner = sampler.sampler_function
        sampler.sampler_function = lambda model, *args, **kwargs: inner(_Counted(model, counter), *args, **kwargs)
        try:
            return self._sample_custom(sampler, sigmas, noise, seed), counter[0]
        finally:
            sampler.sampler_function = inner

    def reference_sigmas(self, steps: int) -> torch.Tensor:
        """KSampler's Karras schedule of ``steps`` steps to sigma 0 on this model's table."""
        patcher = _SigmasOnly(self.ms)
        sampler, scheduler = REFERENCE_SOLVER
        return self.comfy.samplers.KSampler(patcher, steps, "cpu", sampler=sampler, scheduler=scheduler,
                                            denoise=1.0).sigmas.cpu().float()

    def reference(self, noise: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
        """The converged sample of each noise: ComfyUI's dpmpp_2m, ``steps`` Karras steps to sigma 0."""
        sampler = self.comfy.samplers.sampler_object(REFERENCE_SOLVER[0])
        return self.sample(sampler, self.reference_sigmas(steps), noise, seed)[0]

    def with_denoiser(self, noise: torch.Tensor, work):
        """``work(denoiser, x_start)`` inside one sample_custom call: ``denoiser(x, sigma_batch)`` is ComfyUI's guided
        model (conds, CFG and patches applied), ``x_start`` the noise scaled for sigma_max as KSAMPLER scales it.
        The tuner and the ceiling search run here, as the pack's tuner node runs them. Returns what ``work`` does."""
        outcome = {}

        def search(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
            def denoiser(x_step, sigma, **kwargs):
                return model_k(x_step, sigma, **(extra_args or {}))

            outcome["result"] = work(denoiser, x)
            return x

        sigmas = torch.tensor([float(self.ms.sigma_max), 0.0])
        self._sample_custom(self.comfy.samplers.KSAMPLER(search), sigmas, noise, 0)
        return outcome["result"]

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, H, W) pictures in [0, 1] of latents (the proxy's decoder: pixel-shuffle, un-standardise)."""
        from proxies.comfy_model import latent_to_image

        return latent_to_image(self.model.proxy, latents)


class _SigmasOnly:
    """The part of a ModelPatcher KSampler reads to make its sigmas: the model_sampling."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling
        self.object_patches = {"model_sampling": model_sampling}
        self.get_model_object = partial({"model_sampling": model_sampling}.__getitem__)
