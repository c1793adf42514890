"""Train the benchmark's proxy denoisers on CPU and write their weights and manifest (``make train-proxies``).

Each proxy (benchmarks/proxies/models.py) trains from a fixed seed with the standard discrete-time diffusion
objective on SD1.5's table: a random integer timestep t in 0..999, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, the
network given (x_t, t) regresses eps (or v = sqrt(a_t) eps - sqrt(1 - a_t) x0). A "flow" proxy trains with the
rectified-flow objective instead: t uniform in (0, 1), x_t = (1 - t) x0 + t eps, the network given (x_t, 1000 t)
regresses v = eps - x0 (ComfyUI's CONST: D = x - sigma v, timestep 1000 sigma on ModelSamplingDiscreteFlow).
The EMA of the weights is saved to benchmarks/proxies/weights/<name>.safetensors and its SHA-256, data scaling and
training record to manifest.json.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

# Before torch loads libgomp: its threads then spin briefly and sleep instead of spinning for up to 300000 rounds
# while they wait for each other (with another process on the cores, 10x slower steps at the default; tests/conftest).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import torch  # noqa: E402
from torch.nn import functional  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from proxies import data  # noqa: E402
from proxies.models import ARCHITECTURE, MANIFEST, PROXIES, ProxySpec  # noqa: E402
from proxies.network import CONTEXT_DIM, NULL_CLASS, ProxyUNet, sd15_sigmas  # noqa: E402

SEED = 20261205
STEPS = 2000
BATCH = 128
LEARNING_RATE = 2e-3
WARMUP = 100
EMA_DECAY = 0.998
LABEL_DROPOUT = 0.12
FLOW_MULTIPLIER = 1000.0  # ModelSamplingDiscreteFlow's: the network's timestep is 1000 sigma


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_source(spec: ProxySpec, generator: torch.Generator):
    """(shift, scale, draw): draw(n) gives n training pictures (n, 1, 16, 16) and labels (None if unconditional)."""
    if spec.name.startswith("photo"):
        photos = data.grey_photos()
        pixels = data.photo_training_pixels(photos)

        def draw(count):
            return data.photo_patches(count, generator, photos=photos), None
    else:
        images, labels = data.digit_images()
        pixels = images.reshape(-1)

        def draw(count):
            index = torch.randint(len(images), (count,), generator=generator)
            return images[index], labels[index]
    return float(pixels.mean()), float(pixels.std()), draw


def train(spec: ProxySpec, steps: int = STEPS, log_every: int = 100) -> dict:
    """Train one proxy, save its EMA weights; returns its manifest entry."""
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    shift, scale, draw = training_source(spec, generator)
    alphas_cumprod = (1.0 / (1.0 + sd15_sigmas(spec.zsnr) ** 2)).float()
    net = ProxyUNet(**ARCHITECTURE, conditional=spec.conditional)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=0.0)

    def learning_rate(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        return 0.5 * (1.0 + math.cos(math.pi * (step - WARMUP) / (steps - WARMUP)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate)
    losses, curve = [], []
    start = time.time()
    for step in range(steps):
        images, labels = draw(BATCH)
        x0 = data.to_latent(images, shift, scale)
        if spec.prediction == "flow":
            t = torch.rand(BATCH, generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            s = t.view(-1, 1, 1, 1)
            xt, target, t = (1.0 - s) * x0 + s * noise, noise - x0, t * FLOW_MULTIPLIER
        else:
            t = torch.randint(0, len(alphas_cumprod), (BATCH,), generator=generator)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=generator)
            xt = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
            target = noise if spec.prediction == "eps" else a.sqrt() * noise - (1.0 - a).sqrt() * x0
        context = None
        if spec.conditional:
            dropped = torch.rand(BATCH, generator=generator) < LABEL_DROPOUT
            labels = torch.where(dropped, torch.full_like(labels, NULL_CLASS), labels)
            context = functional.one_hot(labels, CONTEXT_DIM).float()[:, None]
        loss = functional.mse_loss(net(xt, t.float(), context=context), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            for kept, live in zip(ema.parameters(), net.parameters()):
                kept.lerp_(live, 1.0 - EMA_DECAY)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            curve.append(round(sum(losses[-log_every:]) / log_every, 5))
            print(f"{spec.name} step {step + 1}/{steps} loss {curve[-1]:.4f} {time.time() - start:.0f} s", flush=True)
    seconds = time.time() - start
    from safetensors.torch import save_file

    state = {key: value.detach().contiguous().clone() for key, value in ema.state_dict().items()}
    save_file(state, str(spec.weights), metadata={"proxy": spec.name, "prediction": spec.prediction})
    tail = min(200, steps)
    return {
        "file": spec.weights.name, "sha256": sha256(spec.weights), "bytes": spec.weights.stat().st_size,
        "data": spec.data, "shift": shift, "scale": scale,
        "prediction": spec.prediction, "zsnr": spec.zsnr, "conditional": spec.conditional,
        **({"t_sampling": "uniform in (0, 1)", "model_sampling_shift": spec.shift}
           if spec.prediction == "flow" else {}),
        "label_dropout": LABEL_DROPOUT if spec.conditional else 0.0,
        "architecture": {"network": "ProxyUNet", **{k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in ARCHITECTURE.items()}},
        "parameters": sum(p.numel() for p in net.parameters()),
        "seed": SEED, "steps": steps, "batch": BATCH, "learning_rate": LEARNING_RATE, "warmup": WARMUP,
        "schedule": "linear warm-up then cosine to 0", "ema_decay": EMA_DECAY, "optimiser": "AdamW",
        "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other processes on the cores slow it down
        "final_loss": round(sum(losses[-tail:]) / tail, 5), "final_loss_steps": tail,
        "loss_curve_every": log_every, "loss_curve": curve, "torch": torch.__version__,
    }


def main(argv=None) -> int:
    """Train the named proxies (all by default) one after the other and update the manifest after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(PROXIES),
                        help=f"proxies to train (default: all of {', '.join(PROXIES)})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps of batch {BATCH} (default {STEPS})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.names:
        if name not in PROXIES:
            parser.error(f"unknown proxy {name!r}; known: {', '.join(PROXIES)}")
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        entry = train(PROXIES[name], args.steps)
        manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
        manifest[name] = entry
        MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
        print(f"{name}: {entry['bytes']} bytes, {entry['seconds']} s, final loss {entry['final_loss']}, "
              f"sha256 {entry['sha256']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
