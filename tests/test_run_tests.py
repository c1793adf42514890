"""scripts/run_tests.py, what `make test` runs: the e2e tests beside the others, one exit status for both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from run_tests import NO_TESTS, combined  # scripts/ is on sys.path (conftest.py)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("rest, e2e, expected", [
    (0, 0, 0),
    (1, 0, 1),  # a failure in either process fails make test
    (0, 1, 1),
    (0, NO_TESTS, 0),  # PYTEST_ARGS selected only tests of one kind
    (NO_TESTS, 0, 0),
    (NO_TESTS, NO_TESTS, NO_TESTS),  # nothing collected at all
    (NO_TESTS, 1, 1),
    (2, NO_TESTS, 2),  # interrupted or a usage error, not hidden by the other's "no tests"
])
def test_the_exit_status_is_the_worse_of_the_two(rest, e2e, expected):
    assert combined(rest, e2e) == expected


def test_a_marker_expression_of_ones_own_runs_one_process():
    """With -m in PYTEST_ARGS the two processes would both run the user's selection: one pytest runs it instead,
    and its exit status is make test's (5 here: the expression selects nothing)."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "run_tests.py"), "-m", "not e2e", "-q",
                             "-k", "no_test_has_this_name_xyz", "-p", "no:cacheprovider"],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == NO_TESTS, result.stdout[-2000:] + result.stderr[-2000:]
    assert "end-to-end tests (-m e2e)" not in result.stdout and "deselected" in result.stdout


def test_make_installs_the_requirements_of_each_comfyui_it_is_pointed_at(tmp_path):
    """The venv's stamp names the ComfyUI whose requirements it holds: a venv made for PINNED runs `make test` without
    installing again, and `COMFYUI_PATH=... make test` with it installs first (0.3.64 imports av, which PINNED's
    requirements lack), once per COMFYUI_PATH. Read off make's dry run."""
    import os
    import shutil

    if shutil.which("make") is None:
        pytest.fail("make is not installed: `make test` is the README's test command")
    venv = tmp_path / "venv"
    venv.mkdir()

    def planned(comfyui_path: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "MAKEFLAGS", "MAKELEVEL")}
        if comfyui_path:
            env["COMFYUI_PATH"] = comfyui_path
        return subprocess.run(["make", "-n", "test", f"VENV={venv}"], cwd=REPO, env=env, check=True,
                              capture_output=True, text=True).stdout

    assert "install_env.sh" in planned(None) and f"touch {venv}/.installed-pinned" in planned(None)
    (venv / ".installed-pinned").touch()
    assert "install_env.sh" not in planned(None) and "run_tests.py" in planned(None)
    current = planned("/somewhere/ComfyUI")
    assert "install_env.sh" in current
    stamp = next(line.split()[-1] for line in current.splitlines() if line.startswith("touch "))
    assert Path(stamp).parent == venv and Path(stamp).name != ".installed-pinned"
    Path(stamp).touch()
    assert "install_env.sh" not in planned("/somewhere/ComfyUI") and "install_env.sh" in planned("/elsewhere/ComfyUI")
