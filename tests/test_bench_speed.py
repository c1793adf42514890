"""Smoke test of the speed benchmark (benchmarks/speed.py --quick): the real server, workflows and loader.

It runs in its own process, as `make bench` does: a ComfyUI server with the bundled workflows on the
random-weight SD1.5 checkpoint, then the in-process measurements. --quick cuts every sampler to one
or two UNet calls, so this checks the machinery (conversion, branches, counting, memory, tables),
not the speed.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from conftest import REPO

EXPECTED_CALLS = {"SD1.5 5-step": 1, "SD1.5 6-step": 1, "SD1.5 8-step": 1, "DPM++2M Karras 20 steps": 2}


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.e2e
def test_quick_speed_run_completes_with_finite_numbers(tmp_path):
    report = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--json", str(report),
                           "--workdir", str(tmp_path / "server")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())

    workflows = result["workflows"]
    assert {label: t["unet_calls"] for label, t in workflows.items()} == {k: [v] for k, v in EXPECTED_CALLS.items()}
    for t in workflows.values():
        assert all(finite_positive(v) for v in t["seconds"])
        # the server holds the SD1.5 model (about 4 GiB in float32 on CPU) while it samples
        assert all(p >= 2.0 and p >= b for p, b in zip(t["peak_rss"], t["rss_before"])), t
        # timed runs reuse the loaded model and encoded prompts (the warm-up made them)
        assert all({"CheckpointLoaderSimple", "CLIPTextEncode"} <= set(c) for c in t["cached"]), t["cached"]

    overheads = result["overheads"]
    assert {k: v["nfe"] for k, v in overheads.items()} == {
        "ours dpmpp_2m": 8, "core dpmpp_2m": 8, "ours dpmpp_1s": 5, "core euler": 5,
        "ours unipc": 8, "core uni_pc": 8, "ours unipc_afs": 6, "core uni_pc, 6 steps": 6}
    assert all(finite_positive(v["per_step"]) for v in overheads.values())

    unet, patches = result["unet_seconds"], result["patch_seconds"]
    assert sorted(unet) == ["Timed FreeU (every step)", "core FreeU", "no FreeU"]
    assert all(finite_positive(v) for v in unet.values())
    assert sorted(patches) == sorted([*unet, "Timed FreeU (steps 2..4)"])
    assert all(math.isfinite(v) for v in patches.values())
    # FreeU filters the decoder features; no patch at all costs (next to) nothing
    assert patches["no FreeU"] < patches["core FreeU"] and patches["no FreeU"] < patches["Timed FreeU (every step)"]

    text = result["text"]
    for heading in ("Headline:", "### Time to image", "### Sampler overhead", "### FreeU cost"):
        assert heading in text
    for label in [*EXPECTED_CALLS, "ours dpmpp_2m, SD1.5 8-step sigmas", "core euler, SD1.5 5-step sigmas",
                  "ours unipc, SD1.5 8-step UniPC sigmas", "core uni_pc, 6 steps, SDXL 6-step UniPC sigmas",
                  "Timed FreeU (steps 2..4)"]:
        assert f"| {label} |" in text
    assert not re.search(r"\b(nan|inf)\b", text)
    # the UniPC sampler's own cost outside the model is reported against a UNet evaluation, next to core uni_pc
    assert re.search(r"sampler overhead, ours unipc against core uni_pc: .* of a UNet evaluation", text)
