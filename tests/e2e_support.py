"""Shared by the end-to-end tests: a real ComfyUI server with the pack, the probe pack and a random-weight
checkpoint, bundled workflows turned into API prompts for it, and the evaluations the probe counted."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from comfyui_server import PROBE_PACK, ComfyServer, probe_evaluations
from conftest import REPO
from PIL import Image
from workflow_api import to_api, with_seed

TEST_IMAGE = "fewstep-e2e-input.png"
REPORT: list[str] = []  # lines printed at the end of the pytest run (see conftest.pytest_terminal_summary)


@contextmanager
def server_with_checkpoint(workdir: Path, arch: str, args: list[str] = ()):
    """A started ComfyServer whose models/checkpoints holds the random-weight ``arch`` checkpoint."""
    from random_checkpoint import random_checkpoint

    checkpoint = random_checkpoint(arch)
    name = f"random-{arch}.safetensors"
    with ComfyServer(workdir, checkpoints={name: checkpoint}, extra_custom_nodes=[PROBE_PACK],
                     args=list(args)) as server:
        server.checkpoint_name = name
        server.info = server.object_info()
        gradient = Image.linear_gradient("L").resize((96, 80)).convert("RGB")
        gradient.save(server.input_dir / TEST_IMAGE)
        yield server


def workflow_prompt(server, name: str, size: int, seed: int | None = None) -> dict:
    """A bundled workflow as an API prompt for the test server: its checkpoint, a reduced resolution,
    the test image, and optionally another seed (every sampler of the workflow gets it)."""
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    prompt = to_api(workflow, server.info)  # new dicts on every call: edited in place below
    if seed is not None:
        prompt = with_seed(prompt, seed)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = server.checkpoint_name
        elif kind in ("EmptyLatentImage", "ImageScale"):
            inputs["width"] = inputs["height"] = size
        elif kind == "LoadImage":
            inputs["image"] = TEST_IMAGE
    return prompt


def only_outputs(prompt: dict, keep_prefix: str) -> dict:
    """The prompt with every SaveImage removed except the one whose filename_prefix starts with keep_prefix
    (ComfyUI then runs only the branch that feeds it)."""
    return {k: v for k, v in prompt.items()
            if v["class_type"] != "SaveImage" or v["inputs"]["filename_prefix"].startswith(keep_prefix)}


evaluations = probe_evaluations  # the tests' name for it


def run_timed(server, prompt: dict, timeout: float = 900) -> tuple[dict, str, float]:
    """(history entry, prompt id, wall seconds from queueing to the finished history entry)."""
    start = time.perf_counter()
    prompt_id = server.queue(prompt)
    entry = server.wait(prompt_id, timeout=timeout)
    return entry, prompt_id, time.perf_counter() - start


def saved_pixels(server, entry) -> tuple[tuple[int, int], str, bytes]:
    """(size, mode, raw pixel bytes) of the one image a prompt saved."""
    (path,) = server.output_images(entry)
    with Image.open(path) as image:
        return image.size, image.mode, image.tobytes()


def rss_mib(server) -> float:
    return server.get_json("/fewstep_probe/memory")["rss_kib"] / 1024
