"""The README's headless demo (scripts/demo.py, `make demo`), run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import COMFY, REPO

DEMO = [sys.executable, str(REPO / "scripts" / "demo.py")]


def run_demo(*args, cwd=None):
    env = {**os.environ, "COMFYUI_PATH": str(COMFY)}
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)


def test_without_a_checkpoint_it_says_where_to_put_one(tmp_path):
    result = run_demo("--checkpoint", str(tmp_path / "missing.safetensors"))
    assert result.returncode == 2
    assert "models/checkpoints" in result.stderr and str(COMFY.resolve()) in result.stderr  # resolved, as the demo
    assert "--checkpoint" in result.stderr


@pytest.mark.e2e
def test_demo_runs_the_workflow_and_the_20_step_baseline(tmp_path):
    from random_checkpoint import random_checkpoint

    checkpoint = random_checkpoint("sd15")
    out = tmp_path / "out"
    result = run_demo("--checkpoint", str(checkpoint), "--size", "64", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(re.findall(r"^(fewstep_sd15_5step|20-step DPM\+\+ 2M Karras)\s+(\d+)\s", result.stdout, re.M))
    assert rows == {"fewstep_sd15_5step": "5", "20-step DPM++ 2M Karras": "20"}, result.stdout
    assert re.search(r"is \d+\.\d+x faster than 20-step DPM\+\+ 2M Karras \(5 vs 20 model evaluations\)",
                     result.stdout), result.stdout
    assert len(list(out.glob("*.png"))) == 2
    assert "RANDOM WEIGHTS" not in result.stdout  # a checkpoint given is used as given, whatever its weights


@pytest.mark.e2e
def test_without_any_checkpoint_it_runs_on_random_weights_and_says_so(tmp_path):
    """A fresh machine: no --checkpoint and none in ComfyUI's models/checkpoints. The demo runs the same
    workflow on the cached random-weight SD1.5 checkpoint, and says before and after that the images are
    noise and only the timings and evaluation counts mean anything."""
    from demo import find_checkpoint
    from random_checkpoint import checkpoint_path, random_checkpoint

    if find_checkpoint(COMFY, "v1-5-pruned-emaonly.safetensors") is not None:
        pytest.skip(f"{COMFY}/models/checkpoints holds a checkpoint: the demo uses it, as it should")
    random_checkpoint("sd15")  # generated once (cached), as the demo would
    out = tmp_path / "out"
    result = run_demo("--size", "64", "--no-baseline", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "No checkpoint in" in text and "--random-weights" in text
    notices = [m.start() for m in re.finditer(r"RANDOM WEIGHTS: .*noise", text)]
    table = text.index("model evaluations")
    assert len(notices) == 2 and notices[0] < table < notices[1], text  # before the run and after the results
    assert "only the wall times and the model-evaluation counts mean anything" in text[:table]
    assert "model-evaluation counts above mean anything" in text[notices[1]:]
    assert f"checkpoint: {checkpoint_path('sd15')} (RANDOM weights)" in text
    assert re.search(r"^fewstep_sd15_5step\s+5\s", text, re.M), text
    images = list(out.glob("*.png"))
    assert len(images) == 1 and images[0].name.startswith("RANDOM-WEIGHTS-noise_"), images


def test_random_weights_option_and_checkpoint_exclude_each_other(tmp_path):
    result = run_demo("--random-weights", "--checkpoint", str(tmp_path / "model.safetensors"))
    assert result.returncode == 2 and "exclude each other" in result.stderr
