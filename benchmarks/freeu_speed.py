"""FreeU speed: our FFT-free filter against core FreeU's FFT filter, and one patched UNet evaluation.

    make bench-freeu        (or: .venv/bin/python benchmarks/freeu_speed.py [--device cuda])

Runs against the same ComfyUI as the tests (COMFYUI_PATH or the PINNED runtime). Prints times and
ratios measured in this run. The UNet is a full-size SD1.5-architecture UNet with random weights.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))
from comfyui_runtime import comfyui_path, load_pack  # noqa: E402

sys.path.insert(0, str(comfyui_path()))

# Skip features filtered by FreeU at the recipes' resolutions, batch 2 (CFG).
SHAPES = {
    "SD1.5 512 (1280x16x16)": (2, 1280, 16, 16),
    "SD1.5 512 (640x32x32)": (2, 640, 32, 32),
    "SDXL 1024 (1280x32x32)": (2, 1280, 32, 32),
    "SDXL 1024 (640x64x64)": (2, 640, 64, 64),
}


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after a warm-up."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--latent", type=int, default=None,
                        help="latent size of the UNet evaluation (default 64 = 512x512 on a GPU, 16 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--filters-only", action="store_true",
                        help="only the filter table (make bench: speed.py times FreeU in the checkpoint's UNet)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.latent = args.latent or (64 if args.device == "cuda" else 16)

    from comfy.cli_args import args as comfy_args
    if args.device == "cpu":
        comfy_args.cpu = True
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from comfy_extras.nodes_freelunch import Fourier_filter, FreeU

    from fewstep.freeu import low_frequency_filter

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    print(f"# FreeU speed on {platform.machine()} {args.device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {dtype}")
    print(f"{'feature map':28s} {'core FFT ms':>12s} {'ours ms':>10s} {'speed-up':>9s}")
    for name, shape in SHAPES.items():
        x = torch.randn(shape, device=device, dtype=dtype)
        core = timed(lambda: Fourier_filter(x, threshold=1, scale=0.2), args.repeats, args.device)
        ours = timed(lambda: low_frequency_filter(x, 0.2), args.repeats, args.device)
        print(f"{name:28s} {core * 1e3:12.3f} {ours * 1e3:10.3f} {core / ours:8.1f}x")
    if args.filters_only:
        return

    config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
              "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
              "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], "channel_mult": [1, 2, 4, 4],
              "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
              "num_heads": 8, "num_head_channels": -1}
    model = comfy.supported_models.SD15(config).get_model({})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    model = model.to(device, dtype).eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(model, device, device)
    pack = load_pack()
    timed_freeu = pack.NODE_CLASS_MAPPINGS["TimedFreeU"]()
    variants = {
        "no FreeU": patcher,
        "core FreeU": FreeU().patch(patcher, 1.1, 1.1, 0.9, 0.2)[0],
        "Timed FreeU (every step)": timed_freeu.patch(patcher, 1.1, 1.1, 0.9, 0.2, "v1", 1, -1, 0.0, 1.0)[0],
        "Timed FreeU (window 2..4)": timed_freeu.patch(patcher, 1.1, 1.1, 0.9, 0.2, "v1", 2, 4, 0.0, 1.0)[0],
    }
    x = torch.randn(2, 4, args.latent, args.latent, device=device, dtype=dtype)
    t = torch.full((2,), 500.0, device=device)
    context = torch.randn(2, 77, 768, device=device, dtype=dtype)
    schedule = torch.tensor([14.6, 4.5, 1.96, 1.0, 0.5, 0.13], device=device)
    print(f"\n# one UNet evaluation, full-size SD1.5 UNet, latent {args.latent}x{args.latent}, batch 2")
    calls = {}
    for name, variant in variants.items():
        options = dict(variant.model_options.get("transformer_options", {}),
                       sigmas=torch.full((2,), 1.96, device=device), sample_sigmas=schedule)
        calls[name] = partial(variant.model.diffusion_model, x, t, context=context, transformer_options=options)
    # Round-robin over the variants, so drift in the machine's speed hits all of them alike.
    samples = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(max(3, args.repeats // 2)):
            for name, call in calls.items():
                samples[name].append(timed(call, 1, args.device))
    results = {name: statistics.median(times) for name, times in samples.items()}
    for name, seconds in results.items():
        print(f"{name:28s} {seconds * 1e3:10.1f} ms")
    print(f"Timed FreeU / core FreeU: {results['Timed FreeU (every step)'] / results['core FreeU']:.3f}; "
          f"FreeU overhead over no FreeU: core {results['core FreeU'] / results['no FreeU'] - 1:+.1%}, "
          f"ours {results['Timed FreeU (every step)'] / results['no FreeU'] - 1:+.1%}")


if __name__ == "__main__":
    main()
