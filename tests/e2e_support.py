"""Shared by the end-to-end tests: a real ComfyUI server with the pack, the probe pack and a random-weight
checkpoint, bundled workflows turned into API prompts for it, and the evaluations the probe counted."""

from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from pathlib import Path

from comfyui_server import ComfyServer
from conftest import REPO
from workflow_api import to_api

PROBE = REPO / "scripts" / "eval_probe"
TEST_IMAGE = "fewstep-e2e-input.png"
REPORT: list[str] = []  # lines printed at the end of the pytest run (see conftest.pytest_terminal_summary)


@contextmanager
def server_with_checkpoint(workdir: Path, arch: str):
    """A started ComfyServer whose models/checkpoints holds the random-weight ``arch`` checkpoint."""
    from PIL import Image
    from random_checkpoint import random_checkpoint

    checkpoint = random_checkpoint(arch)
    name = f"random-{arch}.safetensors"
    with ComfyServer(workdir, checkpoints={name: checkpoint}, extra_custom_nodes=[PROBE]) as server:
        server.checkpoint_name = name
        server.info = server.object_info()
        gradient = Image.linear_gradient("L").resize((96, 80)).convert("RGB")
        gradient.save(server.input_dir / TEST_IMAGE)
        yield server


def workflow_prompt(server, name: str, size: int, seed: int | None = None) -> dict:
    """A bundled workflow as an API prompt for the test server: its checkpoint, a reduced resolution,
    the test image, and optionally another seed (every sampler of the workflow gets it)."""
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    prompt = copy.deepcopy(to_api(workflow, server.info))
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = server.checkpoint_name
        elif kind in ("EmptyLatentImage", "ImageScale"):
            inputs["width"] = inputs["height"] = size
        elif kind == "LoadImage":
            inputs["image"] = TEST_IMAGE
        if seed is not None and kind == "SamplerCustom":
            inputs["noise_seed"] = seed
        if seed is not None and kind == "KSampler":
            inputs["seed"] = seed
    return prompt


def only_outputs(prompt: dict, keep_prefix: str) -> dict:
    """The prompt with every SaveImage removed except the one whose filename_prefix starts with keep_prefix
    (ComfyUI then runs only the branch that feeds it)."""
    return {k: v for k, v in prompt.items()
            if v["class_type"] != "SaveImage" or v["inputs"]["filename_prefix"].startswith(keep_prefix)}


def evaluations(server, prompt_id: str) -> list[dict]:
    """The model evaluations the probe saw for a prompt: consecutive calls at the same sigma are one
    evaluation (ComfyUI may split a cond / uncond batch into several calls)."""
    calls = server.get_json(f"/fewstep_probe/calls/{prompt_id}")
    groups = []
    for call in calls:
        if groups and groups[-1]["sigmas"] == call["sigmas"]:
            groups[-1]["calls"] += 1
        else:
            groups.append({**call, "calls": 1})
    return groups


def run_timed(server, prompt: dict, timeout: float = 900) -> tuple[dict, str, float]:
    """(history entry, prompt id, wall seconds from queueing to the finished history entry)."""
    start = time.perf_counter()
    prompt_id = server.queue(prompt)
    entry = server.wait(prompt_id, timeout=timeout)
    return entry, prompt_id, time.perf_counter() - start


def rss_mib(server) -> float:
    return server.get_json("/fewstep_probe/memory")["rss_kib"] / 1024
