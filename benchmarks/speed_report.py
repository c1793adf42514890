"""Speed report: the tables, the verdicts against the targets, and docs/speed.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from speed_workflows import BASELINE, REPO

sys.path.insert(0, str(REPO / "scripts"))
from comfyui_runtime import write_version_section  # noqa: E402

DOCS = REPO / "docs"
TARGET_SPEEDUP = 0.95 * 20 / 5  # issue 5: the 5-step workflow at least 3.8x faster than 20 steps
TARGET_OVERHEAD = 0.02  # sampler and patch overheads within 2% of core


def machine() -> str:
    """The machine the report ran on: OS, CPU, GPU or core count, torch and its threads."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    return f"{platform.system()} {platform.machine()}, {cpu}, {device}, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"


def speed_table(timings: dict) -> list[str]:
    """Time to image per workflow, with the speed-up against 20 steps and peak memory."""
    base = timings[BASELINE].median
    lines = ["| workflow | UNet calls | time to image, median (min-max) s | speed-up vs 20 steps | "
             "peak RSS GiB (over idle) |", "|---|---|---|---|---|"]
    for t in timings.values():
        over = statistics.median(p - b for p, b in zip(t.peak_rss, t.rss_before))
        lines.append(f"| {t.label} | {statistics.median(t.unet_calls):g} | {t.median:.2f} ({min(t.seconds):.2f}-"
                     f"{max(t.seconds):.2f}) | {base / t.median:.2f}x | {max(t.peak_rss):.2f} (+{over:.2f}) |")
    return lines


PAIRS = (("ours dpmpp_2m", "core dpmpp_2m"), ("ours dpmpp_1s", "core euler"), ("ours unipc", "core uni_pc"),
         ("ours unipc_afs", "core uni_pc, 6 steps"))


def overhead_table(overheads: dict, unet: dict) -> list[str]:
    """Sampler overhead per step of ours against core at equal NFE."""
    step = unet["no FreeU"]
    lines = ["| sampler, sigmas | NFE | sampler overhead ms/step (UNet skipped) | ours - core, ms/step | "
             "ours - core, % of a real step | whole sampling ours / core (equal NFE) |", "|---|---|---|---|---|---|"]
    for ours_label, core_label in PAIRS:
        ours, core = overheads[ours_label], overheads[core_label]
        real_step = step + core.per_step
        diff = ours.per_step - core.per_step
        ratio = (step + ours.per_step) / real_step
        lines.append(f"| {ours.label} | {ours.nfe} | {ours.per_step * 1e3:.3f} | {diff * 1e3:+.3f} | "
                     f"{diff / real_step:+.3%} | {ratio:.4f} |")
        lines.append(f"| {core.label} | {core.nfe} | {core.per_step * 1e3:.3f} | - | - | - |")
    return lines


def freeu_table(unet: dict, patches: dict) -> list[str]:
    """FreeU cost per UNet evaluation: whole evaluations and the patches alone."""
    none, core = unet["no FreeU"], unet["core FreeU"]
    lines = ["| UNet patch | UNet evaluation ms (median) | over no FreeU | vs core FreeU | patches alone, ms per "
             "evaluation | patches, % of an evaluation | patches - core FreeU's, % of an evaluation |",
             "|---|---|---|---|---|---|---|"]
    for name, seconds in patches.items():
        whole = (f"{unet[name] * 1e3:.1f} | {unet[name] / none - 1:+.2%} | {unet[name] / core:.3f}"
                 if name in unet else "- | - | -")
        lines.append(f"| {name} | {whole} | {seconds * 1e3:.3f} | {seconds / none:.3%} | "
                     f"{(seconds - patches['core FreeU']) / none:+.3%} |")
    return lines


def verdicts(timings: dict, overheads: dict, unet: dict, patches: dict) -> list[str]:
    """The headline: each measurement against its target (met or NOT met)."""
    speedup = timings[BASELINE].median / timings["SD1.5 5-step"].median
    lines = [f"time to image, 5-step workflow against 20-step DPM++2M Karras: {speedup:.2f}x faster "
             f"(target >= {TARGET_SPEEDUP:.1f}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); 6-step "
             f"{timings[BASELINE].median / timings['SD1.5 6-step'].median:.2f}x, 8-step "
             f"{timings[BASELINE].median / timings['SD1.5 8-step'].median:.2f}x"]
    for ours_label, core_label in PAIRS:
        ours, core = overheads[ours_label], overheads[core_label]
        share = (ours.per_step - core.per_step) / (unet["no FreeU"] + core.per_step)
        own = ours.per_step / unet["no FreeU"]
        lines.append(f"sampler overhead, {ours_label} against {core_label}: "
                     f"{(ours.per_step - core.per_step) * 1e3:+.3f} ms per step = {share:+.3%} of a step "
                     f"(target within {TARGET_OVERHEAD:.0%}: "
                     f"{'met' if abs(share) <= TARGET_OVERHEAD else 'NOT met'}); its own cost outside the model "
                     f"{ours.per_step * 1e3:.3f} ms per step = {own:.3%} of a UNet evaluation "
                     f"(target within {TARGET_OVERHEAD:.0%}: {'met' if own <= TARGET_OVERHEAD else 'NOT met'})")
    for name in ("Timed FreeU (every step)", "Timed FreeU (steps 2..4)"):
        extra = (patches[name] - patches["core FreeU"]) / unet["no FreeU"]
        lines.append(f"{name} against core FreeU: patch cost {patches[name] * 1e3:.3f} ms against "
                     f"{patches['core FreeU'] * 1e3:.3f} ms per UNet evaluation, {extra:+.3%} of an evaluation "
                     f"(target within {TARGET_OVERHEAD:.0%}: {'met' if extra <= TARGET_OVERHEAD else 'NOT met'})")
    lines.append(f"whole UNet evaluation, Timed FreeU / core FreeU: "
                 f"{unet['Timed FreeU (every step)'] / unet['core FreeU']:.3f} (run-to-run noise included)")
    return lines


def markdown(label: str, options, timings: dict, overheads: dict, unet: dict, patches: dict, seconds: float) -> str:
    """The markdown section of one run (one ComfyUI version) for docs/speed.md."""
    size = options.size
    out = [f"## {label}", "",
           f"Run {datetime.date.today().isoformat()} on {machine()}; {size}x{size} pixels (latent "
           f"{size // 8}x{size // 8}), guidance 7.5 (cond and uncond in one UNet call of batch 2); time to image "
           f"{options.repeats} timed rounds after a warm-up, UNet evaluations {options.repeats} rounds, sampler "
           f"overheads {options.overhead_repeats} rounds, FreeU patches {options.patch_repeats} replays; "
           f"whole benchmark {seconds:.0f} s.",
           "", "Headline:", ""]
    out += [f"- {line}" for line in verdicts(timings, overheads, unet, patches)]
    out += ["", "### Time to image (bundled workflows on a ComfyUI server)", ""] + speed_table(timings)
    out += ["", "### Sampler overhead at equal NFE (in process, SamplerCustom)", ""] + overhead_table(overheads, unet)
    out += ["", "### FreeU cost per UNet evaluation (in process: whole evaluations through SamplerCustom, and the "
            "patches alone replayed on the decoder features of step 3 of the 5-step recipe)", ""]
    out += freeu_table(unet, patches)
    return "\n".join(out + [""])


INTRO = """# Speed: few-step workflows against 20-step DPM++2M Karras

Generated by `python benchmarks/speed.py` (see its docstring); do not edit by hand. Each ComfyUI
version the script was run against keeps its own section below.

The checkpoint is a full-size SD1.5-architecture checkpoint with random weights (the speed of a
network does not depend on its values). Time to image is the ComfyUI server's own "Prompt executed
in" time for the bundled workflow with the model loaded and the prompts already encoded (as when a
user queues again with a new seed): sampling + VAE decode + PNG save. "UNet calls" are counted in the
server; peak RSS is the server's peak resident memory during the prompt (the part over the idle
server in brackets). The sampler overhead is the time inside the sampler function minus the time
inside the UNet, per step; the FreeU cost is the UNet time per evaluation with each patch. On a
shared CPU, differences of a few percent between runs are noise; the rows of each table took turns.
"""


def write_docs(label: str, text: str) -> Path:
    """Write this run's section of docs/speed.md."""
    return write_version_section(DOCS / "speed.md", INTRO, "speed", label, text)
