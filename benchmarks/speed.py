"""Speed: the SD1.5 few-step workflows against the 20-step DPM++2M Karras workflow, on one checkpoint.

    make bench-speed                         (or: python benchmarks/speed.py [--size 256] [--repeats 3])
    python benchmarks/speed.py --quick       (64x64, one repeat, no docs: the smoke test)
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/speed.py

The checkpoint is a full-size SD1.5-architecture checkpoint with RANDOM weights
(scripts/random_checkpoint.py): the speed of a network does not depend on its values.

1. Time to image: the bundled workflows (workflows/fewstep_sd15_{5,6,8}step.json, and the 20-step
   branch of fewstep_sd15_5step_vs_20step.json), converted by scripts/workflow_api.py and queued on
   a real ComfyUI server (scripts/comfyui_server.py) at a reduced resolution. Every workflow runs once
   to warm up (checkpoint load, prompt encoding); then the workflows take turns, each run with a new
   seed, so ComfyUI re-runs sampling, VAE decode and save while the loaded model and encoded prompts
   stay cached, as when a user queues again. Time = the server's own "Prompt executed in" figure.
   UNet calls are counted inside the server (scripts/eval_probe); peak memory is the server's peak
   resident set during that prompt (Linux VmHWM, reset before each prompt).
2. Sampler overhead and FreeU cost, in process with the same checkpoint loaded by
   CheckpointLoaderSimple, through SamplerCustom: the time inside the sampler function minus the
   time inside the UNet (ComfyUI's unet wrapper hook), per step, for our solvers against core
   dpmpp_2m / euler on the same sigmas (equal NFE); and the UNet time per evaluation with no FreeU,
   core FreeU and Timed FreeU (every step).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
sys.path.insert(0, str(REPO / "scripts"))
from comfyui_runtime import comfyui_label, import_comfy, load_pack, write_version_section  # noqa: E402
from random_checkpoint import random_checkpoint  # noqa: E402
from workflow_api import with_seed  # noqa: E402

CHECKPOINT_NAME = "v1-5-pruned-emaonly.safetensors"  # the name the bundled workflows ask for
BASELINE = "DPM++2M Karras 20 steps"
# (label, workflow file, the sampler node type whose branch is timed)
WORKFLOWS = (
    ("SD1.5 5-step", "fewstep_sd15_5step", "SamplerCustom"),
    ("SD1.5 6-step", "fewstep_sd15_6step", "SamplerCustom"),
    ("SD1.5 8-step", "fewstep_sd15_8step", "SamplerCustom"),
    (BASELINE, "fewstep_sd15_5step_vs_20step", "KSampler"),
)
TARGET_SPEEDUP = 0.95 * 20 / 5  # issue 5: the 5-step workflow at least 3.8x faster than 20 steps
TARGET_OVERHEAD = 0.02  # sampler and patch overheads within 2% of core
EXECUTED = re.compile(r"Prompt executed in ([0-9.]+) seconds")


# --------------------------------------------------------------------------------------------
# Part 1: time to image, real workflows on a real server
# --------------------------------------------------------------------------------------------

@dataclass
class WorkflowTiming:
    label: str
    seconds: list[float] = field(default_factory=list)  # server-side, per timed run
    unet_calls: list[int] = field(default_factory=list)
    peak_rss: list[float] = field(default_factory=list)  # GiB, during the prompt
    rss_before: list[float] = field(default_factory=list)  # GiB, just before the prompt
    cached: list[list[str]] = field(default_factory=list)  # node types ComfyUI did not re-run, per run

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def branch(prompt: dict, sampler_type: str) -> dict:
    """The part of an API prompt that one SaveImage needs, for the SaveImage fed by ``sampler_type``."""
    def ancestors(node_id: str, seen: set) -> set:
        if node_id not in seen:
            seen.add(node_id)
            for value in prompt[node_id]["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                    ancestors(str(value[0]), seen)
        return seen

    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":
            needed = ancestors(node_id, set())
            if any(prompt[n]["class_type"] == sampler_type for n in needed):
                return {n: prompt[n] for n in needed}
    raise ValueError(f"no SaveImage fed by a {sampler_type} in this workflow")


def with_size_and_seed(prompt: dict, size: int, seed: int) -> dict:
    prompt = with_seed(prompt, seed)
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"]["width"] = node["inputs"]["height"] = size
    return prompt


def shortened(prompt: dict) -> dict:
    """--quick: every sampler cut to one or two UNet calls (checks the machinery, not the speed)."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "FewStepSigmas":
            node["inputs"].update(recipe="custom", steps=1)
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


def proc_status(pid: int, field_name: str) -> float:
    """A memory figure of /proc/<pid>/status in GiB (nan where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return float("nan")


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's peak resident set (Linux: clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def time_workflows(checkpoint: Path, size: int, repeats: int, workdir: Path, threads: int, quick: bool = False,
                   log=print) -> dict:
    from comfyui_server import PROBE_PACK, ComfyServer
    from workflow_api import to_api

    timings = {label: WorkflowTiming(label) for label, _, _ in WORKFLOWS}
    with ComfyServer(workdir, checkpoints={CHECKPOINT_NAME: checkpoint},
                     extra_custom_nodes=[PROBE_PACK],
                     env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}) as server:
        info = server.object_info()
        prompts = {}
        for label, name, sampler_type in WORKFLOWS:
            workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
            prompts[label] = branch(to_api(workflow, info), sampler_type)
        baseline = next(n["inputs"] for n in prompts[BASELINE].values() if n["class_type"] == "KSampler")
        if (baseline["steps"], baseline["sampler_name"], baseline["scheduler"]) != (20, "dpmpp_2m", "karras"):
            raise RuntimeError(f"the 20-step workflow's KSampler changed: {baseline}")
        if quick:
            prompts = {label: shortened(prompt) for label, prompt in prompts.items()}
        pid = server.process.pid
        seeds = itertools.count(1000)  # a new seed every run: ComfyUI re-runs the sampler, never serves a cache
        executed = 0

        def run(label: str, seed: int):
            nonlocal executed
            if not reset_peak_rss(pid):
                log("note: cannot reset the server's peak RSS; memory columns are peaks since start")
            before = proc_status(pid, "VmRSS")
            prompt_id = server.queue(with_size_and_seed(prompts[label], size, seed))
            entry = server.wait(prompt_id, timeout=1200)
            messages = entry.get("status", {}).get("messages", [])
            cached = sorted({prompts[label][node]["class_type"] for event, data in messages
                             if event == "execution_cached"
                             for node in data.get("nodes", []) if node in prompts[label]})
            deadline = time.monotonic() + 30  # the log line follows the history entry
            while True:
                found = EXECUTED.findall(server.log_path.read_text(errors="replace"))
                if len(found) > executed or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if len(found) <= executed:
                raise RuntimeError(f"no 'Prompt executed' line for {label}:\n{server.log_tail()}")
            executed = len(found)
            calls = server.get_json(f"/fewstep_probe/calls/{prompt_id}")
            if not calls:
                raise RuntimeError(f"{label}: no UNet call, ComfyUI served the prompt from its cache")
            return float(found[-1]), len(calls), proc_status(pid, "VmHWM"), before, cached

        # Warm-up: loads the model and encodes the prompts (the loader and text-encoder nodes are the
        # same in every workflow, so ComfyUI keeps their outputs for all of them).
        first = next(iter(timings))
        seconds, calls, _, _, _ = run(first, next(seeds))
        log(f"  warm-up {first}: {seconds:.2f} s, {calls} UNet calls")
        labels = list(timings)
        for repeat in range(repeats):
            order = labels[repeat % len(labels):] + labels[:repeat % len(labels)]  # rotate: drift hits all
            for label in order:
                seconds, calls, peak, before, cached = run(label, next(seeds))
                t = timings[label]
                t.seconds.append(seconds)
                t.unet_calls.append(calls)
                t.peak_rss.append(peak)
                t.rss_before.append(before)
                t.cached.append(cached)
                log(f"  run {repeat + 1}/{repeats} {label}: {seconds:.2f} s, {calls} UNet calls, "
                    f"peak RSS {peak:.2f} GiB")
    return timings


# --------------------------------------------------------------------------------------------
# Part 2: sampler overhead and FreeU cost, in process
# --------------------------------------------------------------------------------------------

@dataclass
class SamplerOverhead:
    label: str
    nfe: int
    seconds: list[float] = field(default_factory=list)  # inside the sampler function, UNet skipped

    @property
    def per_step(self) -> float:
        return statistics.median(self.seconds) / self.nfe


def load_comfy():
    import_comfy()
    from comfy_extras import nodes_custom_sampler, nodes_freelunch

    import nodes

    return nodes, nodes_custom_sampler, nodes_freelunch, load_pack()


def measure_in_process(checkpoint: Path, size: int, repeats: int, overhead_repeats: int, patch_repeats: int,
                       log=print):
    """(sampler overheads, UNet seconds per evaluation and FreeU patch seconds per evaluation for each FreeU
    variant), on the loaded checkpoint."""
    nodes, custom, freelunch, pack = load_comfy()
    import folder_paths
    mappings = pack.NODE_CLASS_MAPPINGS
    with tempfile.TemporaryDirectory(prefix="fewstep-speed-") as folder, torch.inference_mode():
        os.symlink(checkpoint, os.path.join(folder, CHECKPOINT_NAME))
        folder_paths.add_model_folder_path("checkpoints", folder)
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_NAME)[:3]
        positive = nodes.CLIPTextEncode().encode(clip, "a cozy wooden cabin in a snowy forest, photograph")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry, low quality")[0]
        empty = nodes.EmptyLatentImage().generate(size, size, 1)[0]
        sigmas = {name: mappings["FewStepSigmas"]().get_sigmas(
            model, recipe=name, denoise=1.0, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2)[0]
            for name in ("SD1.5 5-step", "SD1.5 8-step", "SD1.5 8-step UniPC", "SDXL 6-step UniPC")}
    ours = {s: mappings["FewStepDPMPPSampler"]().get_sampler(s, "last_sigma")[0] for s in ("dpmpp_1s", "dpmpp_2m")}
    unipc = mappings["FewStepUniPCSampler"]()
    ours["unipc"] = unipc.get_sampler("auto", "bh1", False, "last_sigma", "noise")[0]
    ours["unipc_afs"] = unipc.get_sampler("auto", "bh1", True, "last_sigma", "noise")[0]
    core = {s: custom.KSamplerSelect().get_sampler(s)[0] for s in ("dpmpp_2m", "euler", "uni_pc")}

    def sample(patched, sampler, schedule):
        with torch.inference_mode():
            out = custom.SamplerCustom().sample(patched, True, 7, 7.5, positive, negative, sampler, schedule,
                                                empty)[0]["samples"]
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite latent")

    # (a) Sampler overhead: everything SamplerCustom's sampler function does per step (our solver or
    # core's, ComfyUI's guidance and batching, callbacks) with the UNet call itself skipped, so the
    # UNet's time and its noise drop out. The skipped call returns a zero prediction.
    skipped = model.clone()
    skipped.set_model_unet_function_wrapper(lambda apply_model, args: torch.zeros_like(args["input"]))
    cases = {  # label: (sampler, sigmas)
        "ours dpmpp_2m": (ours["dpmpp_2m"], "SD1.5 8-step"),
        "core dpmpp_2m": (core["dpmpp_2m"], "SD1.5 8-step"),
        "ours dpmpp_1s": (ours["dpmpp_1s"], "SD1.5 5-step"),
        "core euler": (core["euler"], "SD1.5 5-step"),
        # UniPC: ours (order auto = 2 at 8 evaluations; AFS at 6) against core uni_pc (order 3) on the same sigmas
        "ours unipc": (ours["unipc"], "SD1.5 8-step UniPC"),
        "core uni_pc": (core["uni_pc"], "SD1.5 8-step UniPC"),
        "ours unipc_afs": (ours["unipc_afs"], "SDXL 6-step UniPC"),
        "core uni_pc, 6 steps": (core["uni_pc"], "SDXL 6-step UniPC"),
    }
    overheads = {label: SamplerOverhead(f"{label}, {s} sigmas", len(sigmas[s]) - 1) for label, (_, s) in cases.items()}
    timed_samplers = {}
    for label, (sampler, _) in cases.items():
        timed, inner = copy.copy(sampler), sampler.sampler_function

        def sampler_function(*args, _inner=inner, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                overheads[_label].seconds.append(time.perf_counter() - start)

        timed.sampler_function = sampler_function
        timed_samplers[label] = timed
    for repeat in range(overhead_repeats + 1):  # the first round warms up
        for label, (_, schedule) in cases.items():
            sample(skipped, timed_samplers[label], sigmas[schedule])
        if repeat == 0:
            for o in overheads.values():
                o.seconds.clear()
    log(f"  sampler overheads: {overhead_repeats} rounds done")

    # (b) UNet time per evaluation with each FreeU variant, one evaluation per run (two sigmas),
    # the variants taking turns. On a busy CPU this is noisy at the percent level, so (c) times the
    # patches alone.
    freeu = (1.1, 1.1, 0.9, 0.2)
    variants = {
        "no FreeU": model,
        "core FreeU": freelunch.FreeU().patch(model, *freeu)[0],
        "Timed FreeU (every step)": mappings["TimedFreeU"]().patch(model, *freeu, "v1", 1, -1, 0.0, 1.0)[0],
        "Timed FreeU (steps 2..4)": mappings["TimedFreeU"]().patch(model, *freeu, "v1", 2, 4, 0.0, 1.0)[0],
    }
    whole = ("no FreeU", "core FreeU", "Timed FreeU (every step)")  # a 1-step run is outside the 2..4 window
    per_eval = {name: [] for name in whole}
    timed_models = {}
    for name in whole:
        timed = variants[name].clone()

        def unet(apply_model, args, _name=name):
            start = time.perf_counter()
            out = apply_model(args["input"], args["timestep"], **args["c"])
            per_eval[_name].append(time.perf_counter() - start)
            return out

        timed.set_model_unet_function_wrapper(unet)
        timed_models[name] = timed
    names = list(whole)
    for repeat in range(repeats + 1):  # the first round warms up
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            sample(timed_models[name], ours["dpmpp_1s"], sigmas["SD1.5 5-step"][2:4])
        if repeat == 0:
            for times in per_eval.values():
                times.clear()
        else:
            log(f"  UNet evaluations: round {repeat}/{repeats} done")

    # (c) The patches alone, per UNet evaluation: record the decoder features (h, hsp) and the
    # options each output-block patch receives during one real evaluation at step 3 of the 5-step
    # recipe, then replay them through each variant's patches.
    recorded, step = [], []
    recorder = model.clone()
    recorder.set_model_output_block_patch(
        lambda h, hsp, options: (recorded.append((len(step), h.clone(), hsp.clone(), dict(options))), (h, hsp))[1])
    recorder.set_model_unet_function_wrapper(
        lambda apply_model, args: (step.append(1), apply_model(args["input"], args["timestep"], **args["c"]))[1])
    sample(recorder, ours["dpmpp_1s"], sigmas["SD1.5 5-step"][:4])  # steps 1..3 of the recipe
    blocks = [(h, hsp, options) for index, h, hsp, options in recorded if index == 3]
    patch_cost = {}
    for name, variant in variants.items():
        patches = variant.model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch", [])
        times = []
        for _ in range(patch_repeats + 1):
            inputs = [(h.clone(), hsp.clone(), {**options, "sigmas": options["sigmas"].clone()})
                      for h, hsp, options in blocks]  # fresh tensors: core FreeU scales h in place
            start = time.perf_counter()
            with torch.inference_mode():
                for h, hsp, options in inputs:
                    for patch in patches:
                        h, hsp = patch(h, hsp, options)
            times.append(time.perf_counter() - start)
        patch_cost[name] = statistics.median(times[1:])
    log(f"  FreeU patches: {patch_repeats} replays of {len(blocks)} decoder blocks done")
    return overheads, {name: statistics.median(times) for name, times in per_eval.items()}, patch_cost


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine() -> str:
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
    return write_version_section(DOCS / "speed.md", INTRO, "speed", label, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None,
                        help="image width = height in pixels (default 64 on CPU, 512 on a GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds of the workflows (default 3)")
    parser.add_argument("--overhead-repeats", type=int, default=None,
                        help="rounds of the sampler overheads (default 20)")
    parser.add_argument("--quick", action="store_true",
                        help="the smoke test: 64x64, one round, samplers cut to 1-2 UNet calls, no docs")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/speed.md")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, here and in the server (default 1: on a busy machine more are slower)")
    parser.add_argument("--workdir", type=Path, help="the server's work folder (default: a temporary one)")
    options = parser.parse_args(argv)
    options.size = options.size or (512 if torch.cuda.is_available() and not options.quick else 64)
    options.repeats = options.repeats or (1 if options.quick else 3)
    options.overhead_repeats = options.overhead_repeats or (3 if options.quick else 20)
    options.patch_repeats = 5 if options.quick else 50
    if options.size % 64:
        parser.error(f"--size must be a multiple of 64 (the UNet downsamples the latent 3 times), got {options.size}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on kill
    torch.set_num_threads(options.threads)
    began = time.perf_counter()
    checkpoint = random_checkpoint("sd15")
    label = comfyui_label()
    print(f"# Speed on {label}, {machine()}, {options.size}x{options.size}")
    with tempfile.TemporaryDirectory(prefix="fewstep-speed-server-") as scratch:
        timings = time_workflows(checkpoint, options.size, options.repeats, options.workdir or Path(scratch),
                                 options.threads, options.quick)
    # After the server has stopped, so only one copy of the model is in memory.
    overheads, unet, patches = measure_in_process(checkpoint, options.size, options.repeats,
                                                  options.overhead_repeats, options.patch_repeats)
    text = markdown(label, options, timings, overheads, unet, patches, time.perf_counter() - began)
    print("\n" + text)
    if options.json:
        options.json.write_text(json.dumps({
            "label": label, "size": options.size, "text": text,
            "workflows": {k: vars(v) for k, v in timings.items()},
            "overheads": {k: {"nfe": v.nfe, "seconds": v.seconds, "per_step": v.per_step}
                          for k, v in overheads.items()},
            "unet_seconds": unet, "patch_seconds": patches}, indent=1))
    if not (options.quick or options.no_docs):
        print(f"wrote {write_docs(label, text)}")
    return timings, overheads, unet, patches


if __name__ == "__main__":
    main()
