"""Speed, part 1: time to image of the bundled SD1.5 workflows on a real ComfyUI server.

The workflows (workflows/fewstep_sd15_{5,6,8}step.json, and the 20-step branch of
fewstep_sd15_5step_vs_20step.json) are converted by scripts/workflow_api.py and queued at a reduced
resolution; after one warm-up they take turns, each run with a new seed. Time = the server's own
"Prompt executed in" figure; UNet calls are counted inside the server (scripts/eval_probe); peak memory
is the server's peak resident set during the prompt.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
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
EXECUTED = re.compile(r"Prompt executed in ([0-9.]+) seconds")


@dataclass
class WorkflowTiming:
    """One workflow's timed runs: server time, UNet calls, memory and what ComfyUI served cached."""

    label: str
    seconds: list[float] = field(default_factory=list)  # server-side, per timed run
    unet_calls: list[int] = field(default_factory=list)
    peak_rss: list[float] = field(default_factory=list)  # GiB, during the prompt
    rss_before: list[float] = field(default_factory=list)  # GiB, just before the prompt
    cached: list[list[str]] = field(default_factory=list)  # node types ComfyUI did not re-run, per run

    @property
    def median(self) -> float:
        """Median server seconds over the timed runs."""
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
    """An API prompt with a new seed and every empty latent at ``size`` x ``size`` pixels."""
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
    """Time every bundled workflow on a ComfyUI server: a warm-up, then ``repeats`` rounds taking turns."""
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
