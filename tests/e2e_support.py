"""Shared by the end-to-end tests: a real ComfyUI server with the pack, the probe pack and a random-weight
checkpoint, bundled workflows turned into API prompts for it, and the evaluations the probe counted.
conftest.py's session fixture ``server`` is one such server (SD1.5), shared by every module that needs one."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from build_thumbnails import workflow_files
from comfyui_server import PROBE_PACK, ComfyServer, probe_evaluations
from conftest import REPO
from PIL import Image
from workflow_api import to_api, with_seed

TEST_IMAGE = "fewstep-e2e-input.png"
REPORT: list[str] = []  # lines printed at the end of the pytest run (see conftest.pytest_terminal_summary)
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
RUNNING: list[ComfyServer] = []  # the servers server_with_checkpoint started that have not stopped yet


@contextmanager
def server_with_checkpoint(workdir: Path, arch: str, args: list[str] = ()):
    """A started ComfyServer whose models/checkpoints holds the random-weight ``arch`` checkpoint, and an empty
    file under every checkpoint name the bundled workflows' loaders list (pages that load a workflow then show
    no missing file; nothing queues them), and whose input folder holds the test image and every image the
    bundled workflows load."""
    from random_checkpoint import random_checkpoint

    checkpoint = random_checkpoint(arch)
    name = f"random-{arch}.safetensors"
    placeholder = Path(workdir) / "empty.safetensors"
    placeholder.parent.mkdir(parents=True, exist_ok=True)
    placeholder.write_bytes(b"")
    files = [workflow_files(json.loads(path.read_text())) for path in WORKFLOWS]
    checkpoints = {**{listed: placeholder for names, _ in files for listed in names}, name: checkpoint}
    with ComfyServer(Path(workdir) / "server", checkpoints=checkpoints, extra_custom_nodes=[PROBE_PACK],
                     args=list(args)) as server:
        server.checkpoint_name = name
        server.info = server.object_info()
        gradient = Image.linear_gradient("L").resize((96, 80)).convert("RGB")
        gradient.save(server.input_dir / TEST_IMAGE)
        for image in {listed for _, names in files for listed in names}:
            Image.linear_gradient("L").resize((512, 512)).convert("RGB").save(server.input_dir / image)
        RUNNING.append(server)
        try:
            yield server
        finally:
            RUNNING.remove(server)


def free_memory_of_running_servers(below_mib: float = 2500, timeout: float = 120) -> None:
    """Unload the models of every server started here that still runs (POST /free) and wait until each holds
    less than ``below_mib`` MiB: before a test loads the full-size SDXL model, so that the session's SD1.5
    server does not hold its model too (about 5 GB next to about 13 GB). Measured: 4.8 GB with the SD1.5 model,
    1.1 GB (PINNED) and 1.3 GB (CURRENT) half a second after /free."""
    for server in RUNNING:
        server.free_models()
        deadline = time.monotonic() + timeout
        while rss_mib(server) >= below_mib:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {server.url} still holds {rss_mib(server):.0f} MiB after /free")
            time.sleep(0.5)


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


def workflow_runner(server, size: int, seed: int):
    """run(name) -> (history entry, evaluation groups, wall seconds) of a bundled workflow at ``size`` and ``seed``,
    run the first time a test asks for it: so that tests of one module share each full-size sampling."""
    done = {}

    def run(name: str):
        if name not in done:
            entry, prompt_id, seconds = run_timed(server, workflow_prompt(server, name, size, seed=seed))
            done[name] = entry, evaluations(server, prompt_id), seconds
        return done[name]

    return run


def saved_pixels(server, entry, prefix: str = "") -> tuple[tuple[int, int], str, bytes]:
    """(size, mode, raw pixel bytes) of the one image a prompt saved (of those whose file name starts with
    ``prefix``)."""
    (path,) = [path for path in server.output_images(entry) if path.name.startswith(prefix)]
    with Image.open(path) as image:
        return image.size, image.mode, image.tobytes()


def rss_mib(server) -> float:
    return server.get_json("/fewstep_probe/memory")["rss_kib"] / 1024
