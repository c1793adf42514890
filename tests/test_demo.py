"""The README's headless demo (scripts/demo.py, `make demo`), run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import COMFY, REPO

DEMO = [sys.executable, str(REPO / "scripts" / "demo.py")]


def run_demo(*args, cwd=None):
    env = {**os.environ, "COMFYUI_PATH": str(COMFY)}
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)


def test_without_a_checkpoint_it_says_where_to_put_one(tmp_path):
    result = run_demo("--checkpoint", str(tmp_path / "missing.safetensors"))
    assert result.returncode == 2
    assert "models/checkpoints" in result.stderr and str(COMFY) in result.stderr
    assert "--checkpoint" in result.stderr


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
