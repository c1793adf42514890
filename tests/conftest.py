"""Test setup: a REAL ComfyUI (COMFYUI_PATH, or the PINNED runtime) with this pack loaded by its own loader."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))  # the plain maths package `fewstep` for the pure tests

from comfyui_runtime import comfyui_path, import_comfy, load_pack, run_maybe_async  # noqa: E402

COMFY = comfyui_path()
sys.path.insert(0, str(COMFY))


def pytest_configure(config):
    """Every process the tests start (ComfyUI servers, the demo, the speed benchmark) inherits GOMP_SPINCOUNT=10000
    unless it is set: torch's OpenMP threads (libgomp) then spin briefly and sleep, instead of spinning for up to
    300000 rounds, while they wait for each other. Measured on 2 cores, three full-size SD1.5 evaluations (8x8
    latent, cfg 5): 2.3 s idle and 29 s with the other core busy at libgomp's default; 2.4 s and 4.5 s with 10000
    (OMP_WAIT_POLICY=PASSIVE: 2.5 s and 5.7 s)."""
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's modules, with core extras and this pack loaded through ComfyUI's own loader."""
    import_comfy()
    import comfy.samplers
    from comfy_extras import nodes_custom_sampler, nodes_freelunch, nodes_model_advanced

    import nodes

    pack = load_pack()
    return SimpleNamespace(
        path=COMFY, pack_dir=REPO, nodes=nodes, samplers=comfy.samplers, pack=pack, run=run_maybe_async,
        current=hasattr(comfy.samplers, "SCHEDULER_HANDLERS"),
        custom_sampler=nodes_custom_sampler, freelunch=nodes_freelunch, model_advanced=nodes_model_advanced,
    )


TINY_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, in_channels=4, model_channels=32, num_res_blocks=[1, 1, 1],
    transformer_depth=[1, 1, 1], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1],
    channel_mult=[1, 2, 4], transformer_depth_middle=1, use_linear_in_transformer=False,
    context_dim=32, num_heads=4, num_head_channels=-1,
)


def build_tiny_sd15(seed: int = 0):
    """A real SD1.5-architecture UNet (model_channels 32, ~4M parameters) from ComfyUI's classes."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = dict(TINY_UNET)
    config["num_res_blocks"] = list(config["num_res_blocks"])
    model = comfy.supported_models.SD15(config).get_model({})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 100
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * fan_in ** -0.5)
    model.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """torch on one thread in this process, for the whole session. The in-process tests run small models (the tiny
    UNet, the analytic ones) whose ops are too short to share out: two threads saved 8 % on an idle 2-core machine
    (the in-process files, 50 s against 54 s) and lost up to 10x when another process used a core (0.045 s against
    0.40 s a tiny-UNet forward at load 7). It also suits `make test-fast`'s two workers. Servers started by the
    tests are other processes and keep torch's default (two threads sample a full-size UNet 1.65x faster than one
    on an idle 2-core machine). The previous setting is restored at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(comfy):
    return build_tiny_sd15()


def count_evaluations(model):
    """A clone whose UNet evaluations are counted (ComfyUI's own unet wrapper hook)."""
    counted = model.clone()
    calls = []

    def wrapper(apply_model, args):
        calls.append(float(args["timestep"].max()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted, calls


def conditioning(seed: int, tokens: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY_UNET["context_dim"], generator=generator), {}]]


@pytest.fixture(scope="session")
def conds():
    return conditioning(1), conditioning(2)


def latent(size: int = 16, batch: int = 1):
    return {"samples": torch.zeros(batch, 4, size, size)}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ComfyUI server (``main.py --cpu``, COMFYUI_PATH or PINNED) for the whole session, shared by the
    end-to-end, schedule-route, browser and template tests: the pack, the probe pack, the random-weight SD1.5
    checkpoint and placeholders for every file the bundled workflows name (tests/e2e_support.py). A test that
    queues a prompt gives it a seed no other test uses: ComfyUI serves an identical prompt from its cache."""
    from e2e_support import server_with_checkpoint

    with server_with_checkpoint(tmp_path_factory.mktemp("sd15-server"), "sd15") as running:
        yield running


SERVER_FIXTURES = {"server", "server_1581", "browser"}  # the browser tests load pages from a server


def pytest_collection_modifyitems(items):
    """Mark every test that uses a ComfyUI server as e2e (tests that start one in a subprocess, or load a
    full-size checkpoint, carry the mark themselves)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter):
    """Print what the end-to-end tests measured (wall times, evaluation counts, memory)."""
    from e2e_support import REPORT

    if REPORT:
        terminalreporter.section("end-to-end measurements")
        for line in REPORT:
            terminalreporter.write_line(line)
