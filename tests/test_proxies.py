"""The benchmark's trained proxy denoisers (benchmarks/proxies): the shipped weights are the manifest's, each loads as
a real ComfyUI model with the model_sampling it was trained for, samples through ComfyUI's own path and the pack's
Few-Step KSampler, and is a decent denoiser (converged sampler, beats the linear predictor, cfg follows the label)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys

import pytest
import torch
from conftest import REPO

sys.path.append(str(REPO / "benchmarks"))  # the benchmark's modules import each other by name, as its script does
from proxies import data  # noqa: E402
from proxies.models import PROXIES, manifest  # noqa: E402
from proxies.network import sd15_sigmas  # noqa: E402

NAMES = list(PROXIES)
MAX_BYTES = 5_500_000


def skip_flow_without_flow_sampling(name):
    """The flow proxy needs ComfyUI's flow model sampling (0.3.64; PINNED, March 2024, has none)."""
    import comfy.model_base

    if PROXIES[name].prediction == "flow" and not hasattr(comfy.model_base.ModelType, "FLOW"):
        pytest.skip("PINNED ComfyUI has no flow model sampling (ModelSamplingDiscreteFlow): photo_flow is 0.3.64-only")


@pytest.fixture(scope="module")
def proxies(comfy):
    """benchmarks/proxies/comfy_model.py, imported once ComfyUI is importable."""
    from proxies import comfy_model

    return comfy_model


def sample_custom(comfy, model, name, sampler_name, steps, cfg=1.0, labels=None, batch=4, seed=7):
    """SamplerCustom (ComfyUI's own path: KSamplerSelect + BasicScheduler karras), the latent it returns."""
    from proxies.comfy_model import proxy_conds

    positive, negative = proxy_conds(name, labels, batch)
    sampler = comfy.custom_sampler.KSamplerSelect().get_sampler(sampler_name)[0]
    sigmas = comfy.custom_sampler.BasicScheduler().get_sigmas(model, "karras", steps, 1.0)[0]
    latent = {"samples": torch.zeros(batch, *PROXIES[name].latent_shape)}
    out, _ = comfy.custom_sampler.SamplerCustom().sample(model, True, seed, cfg, positive, negative, sampler, sigmas,
                                                         latent)
    return out["samples"]


def flow_reference_sample(comfy, model, name, steps, batch=4, seed=7):
    """SamplerCustom with dpmpp_2m on the tuner's reference schedule for a flow model (``reference_sigmas`` on the
    model's own table, ``comfy_api.model_sigma_table``): from sigma 1, then evenly in the half-log-SNR."""
    from proxies.comfy_model import proxy_conds

    from fewstep.tuner_objective import reference_sigmas

    table, _ = comfy.pack.nodes.comfy_api.model_sigma_table(model.get_model_object("model_sampling"))
    positive, negative = proxy_conds(name, None, batch)
    sampler = comfy.custom_sampler.KSamplerSelect().get_sampler("dpmpp_2m")[0]
    latent = {"samples": torch.zeros(batch, *PROXIES[name].latent_shape)}
    out, _ = comfy.custom_sampler.SamplerCustom().sample(model, True, seed, 1.0, positive, negative, sampler,
                                                         reference_sigmas(table, steps), latent)
    return out["samples"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_match_the_manifest(name):
    spec, entry = PROXIES[name], manifest()[name]
    assert spec.weights.is_file() and spec.weights.name == entry["file"]
    assert hashlib.sha256(spec.weights.read_bytes()).hexdigest() == entry["sha256"]
    assert spec.weights.stat().st_size == entry["bytes"] <= MAX_BYTES
    assert entry["prediction"] == spec.prediction and entry["zsnr"] == spec.zsnr
    assert entry["conditional"] == spec.conditional and entry["final_loss"] > 0 and entry["steps"] > 0
    assert spec.cfgs == ((1.0, 5.0) if spec.conditional else (1.0,))


def test_the_loader_refuses_a_changed_file_and_names_it(proxies, tmp_path, monkeypatch):
    name = "photo_eps"
    changed = tmp_path / "photo_eps.safetensors"
    raw = bytearray(PROXIES[name].weights.read_bytes())
    raw[-1] ^= 1
    changed.write_bytes(bytes(raw))
    with pytest.raises(proxies.ProxyWeightsError, match=r"photo_eps\.safetensors.*SHA-256"):
        proxies.verified_state_dict(name, changed)
    monkeypatch.setattr(proxies, "_LOADED", {})
    monkeypatch.setitem(PROXIES, name, dataclasses.replace(PROXIES[name], weights=changed))
    with pytest.raises(proxies.ProxyWeightsError, match=str(changed)):
        proxies.load_proxy(name)
    with pytest.raises(KeyError, match="unknown proxy"):
        proxies.load_proxy("nope")


@pytest.mark.parametrize("name", NAMES)
def test_loads_as_a_real_comfyui_model_with_its_model_sampling(comfy, proxies, name):
    import comfy.model_base
    import comfy.model_sampling

    spec = PROXIES[name]
    if spec.prediction == "flow" and not hasattr(comfy.model_base.ModelType, "FLOW"):
        with pytest.raises(proxies.ProxyNeedsFlowSampling, match="no flow model sampling"):
            proxies.load_proxy(name)
        return
    model = proxies.load_proxy(name)
    assert proxies.load_proxy(name) is model  # cached per process
    assert isinstance(model.model, comfy.model_base.BaseModel)
    sampling = model.model.model_sampling
    if spec.prediction == "flow":  # SD3's model sampling, as its model_config makes it
        assert isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
        assert isinstance(sampling, comfy.model_sampling.CONST)
        assert sampling.shift == spec.shift == 3.0 and float(sampling.sigma_max) == 1.0
        assert float(sampling.timestep(torch.tensor(0.25))) == 250.0  # what the network was trained on
        return
    prediction = comfy.model_sampling.V_PREDICTION if spec.prediction == "v" else comfy.model_sampling.EPS
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) and isinstance(sampling, prediction)
    assert float(sampling.sigma_max) == pytest.approx(4518.76 if spec.zsnr else 14.6146, rel=1e-4)
    # the table the network was trained on is ComfyUI's own (ComfyUI rescales for zsnr in float32: 1.4e-5 apart)
    torch.testing.assert_close(sampling.sigmas.double(), sd15_sigmas(spec.zsnr), rtol=5e-5, atol=0)
    assert model.model.model_config.unet_config["model_channels"] == 32


@pytest.mark.parametrize("name", NAMES)
def test_samples_through_comfyui_and_the_few_step_ksampler(comfy, proxies, name):
    skip_flow_without_flow_sampling(name)
    spec = PROXIES[name]
    model = proxies.load_proxy(name)
    labels = torch.tensor([0, 3, 7, 9]) if spec.conditional else None
    cfg = spec.cfgs[-1]
    first = sample_custom(comfy, model, name, "dpmpp_2m", 8, cfg, labels)
    assert first.shape == (4, *spec.latent_shape) and torch.isfinite(first).all()
    assert torch.equal(first, sample_custom(comfy, model, name, "dpmpp_2m", 8, cfg, labels))
    positive, negative = proxies.proxy_conds(name, labels, 4)
    ksampler = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]()
    latent = {"samples": torch.zeros(4, *spec.latent_shape)}
    runs = [ksampler.sample(model, 7, cfg, "SD1.5 5-step", "recipe", positive, negative, latent, 1.0, "")[0]["samples"]
            for _ in range(2)]
    assert runs[0].shape == first.shape and torch.isfinite(runs[0]).all() and torch.equal(runs[0], runs[1])
    pictures = proxies.latent_to_image(name, first)
    assert pictures.shape == (4, 16, 16) and 0.0 <= float(pictures.min()) and float(pictures.max()) <= 1.0


@pytest.mark.parametrize("name", ["photo_eps", "photo_v_zsnr", "photo_flow"])
def test_the_sampler_converges_and_the_network_beats_the_linear_denoiser(comfy, proxies, name):
    skip_flow_without_flow_sampling(name)
    model = proxies.load_proxy(name)
    flow = PROXIES[name].prediction == "flow"
    if flow:  # from sigma 1, KSampler's Karras schedule leaves the high-noise end unresolved: the tuner's reference
        reference, half = (flow_reference_sample(comfy, model, name, steps, batch=8) for steps in (100, 50))
    else:
        reference = sample_custom(comfy, model, name, "dpmpp_2m", 100, batch=8)
        half = sample_custom(comfy, model, name, "dpmpp_2m", 50, batch=8)
    assert float((reference - half).pow(2).mean().sqrt()) < 0.02 * float(reference.std())
    # held-out patches at sigma 1 (flow: 0.5): the network's x0 against the best per-pixel linear guess,
    # x / (1 + sigma^2), or x (1 - s) / ((1 - s)^2 + s^2) for x = (1 - s) x0 + s eps
    entry = manifest()[name]
    x0 = data.to_latent(data.photo_patches(64, torch.Generator().manual_seed(1), held_out=True), entry["shift"],
                        entry["scale"])
    sigma, noise = (0.5 if flow else 1.0), torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    noisy = (1.0 - sigma) * x0 + sigma * noise if flow else x0 + sigma * noise
    context = proxies.proxy_conds(name, None, len(x0))[0][0][0]
    with torch.no_grad():
        denoised = model.model.apply_model(noisy, torch.full((len(x0),), sigma), c_crossattn=context)
    network = float((denoised - x0).pow(2).mean())
    gain = (1.0 - sigma) / ((1.0 - sigma) ** 2 + sigma ** 2) if flow else 1.0 / (1.0 + sigma ** 2)
    linear = float((noisy * gain - x0).pow(2).mean())
    assert network < 0.25 * linear, (network, linear)


def test_guidance_follows_the_label(comfy, proxies):
    """Sampled at cfg 5, digits are their label (nearest training-class mean) more often than at cfg 1."""
    name = "digits_cond"
    model = proxies.load_proxy(name)
    labels = torch.arange(10).repeat(3)
    images, train_labels = data.digit_images()
    means = torch.stack([images[train_labels == k].mean(0).flatten() for k in range(10)])

    def accuracy(cfg):
        latents = sample_custom(comfy, model, name, "dpmpp_2m", 20, cfg, labels, batch=len(labels))
        pictures = proxies.latent_to_image(name, latents).flatten(1)
        return float((torch.cdist(pictures, means).argmin(1) == labels).float().mean())

    weak, strong = accuracy(1.0), accuracy(5.0)
    assert strong > weak and strong >= 0.8, (weak, strong)


def test_the_tuner_beats_the_recipe_on_a_trained_network(comfy, proxies):
    """The Few-Step Schedule Tuner (solver auto, end chosen) on photo_eps at 5 evaluations: the params it returns,
    sampled by Few-Step KSampler (recipe custom) from noises NOT used in tuning, land closer to ComfyUI's own
    100-step DPM++2M Karras solution from the same noises than the SD1.5 5-step recipe does."""
    name = "photo_eps"
    model = proxies.load_proxy(name)
    tuner = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepScheduleTuner"]()
    latent1 = {"samples": torch.zeros(1, *PROXIES[name].latent_shape)}
    positive, negative = proxies.proxy_conds(name, None, 1)
    sigmas, params = tuner.tune(model, positive, negative, 1.0, latent1, 5, "auto", 16, 0, 60.0)
    assert len(sigmas) == 6 and "solver=" in params, params

    batch, seed = 32, 4242  # the tuner's probes come from tuning_seed 0
    positive, negative = proxies.proxy_conds(name, None, batch)
    reference = sample_custom(comfy, model, name, "dpmpp_2m", 100, batch=batch, seed=seed)
    ksampler = comfy.nodes.NODE_CLASS_MAPPINGS["FewStepKSampler"]()
    latent = {"samples": torch.zeros(batch, *PROXIES[name].latent_shape)}

    def rms(recipe, text):
        out = ksampler.sample(model, seed, 1.0, recipe, "off", positive, negative, latent, 1.0, text)[0]["samples"]
        return float((out - reference).pow(2).mean().sqrt())

    recipe, tuned = rms("SD1.5 5-step", ""), rms("custom", params)
    assert tuned < 0.8 * recipe, (tuned, recipe, params)
