"""make test: the end-to-end tests and the rest in two pytest processes at once, one report after the other.

The end-to-end tests (``-m e2e``: a ComfyUI server, full-size random-weight checkpoints) wait on subprocesses
and files for much of their time; the rest (``-m "not e2e"``: the maths, the nodes on a tiny UNet, the tuner)
is pure CPU in this process. Run side by side they share the two cores. The PINNED runtime is installed first,
once, so the two processes do not race to install it. The e2e process writes its report to a file, printed
after the other's; the exit status is the worse of the two (a process that collected no test, pytest's 5, does not
count: a PYTEST_ARGS that selects only one kind). With a marker expression of your
own (``-m``) it runs one pytest process, as before.

    python scripts/run_tests.py [pytest arguments...]      # what `make test PYTEST_ARGS=...` runs
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

NO_TESTS = 5  # pytest's exit status when it collected nothing


def main(argv: list[str]) -> int:
    from comfyui_runtime import comfyui_path

    comfyui_path()  # installs PINNED if needed, before two processes would
    pytest = [sys.executable, "-m", "pytest", "tests"]
    if any(arg.startswith(("-m", "--markexpr")) for arg in argv):
        return subprocess.call([*pytest, *argv], cwd=REPO)  # a marker expression of your own: one process
    with tempfile.TemporaryDirectory(prefix="fewstep-e2e-") as scratch:
        log_path = Path(scratch) / "e2e.log"
        with open(log_path, "w") as log:
            e2e = subprocess.Popen([*pytest, "-m", "e2e", "-p", "no:cacheprovider", *argv], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
            try:
                print("== tests not marked e2e (the e2e tests run beside them; their report follows) ==", flush=True)
                rest = subprocess.call([*pytest, "-m", "not e2e", *argv], cwd=REPO)
            finally:
                status = e2e.wait()
        print("\n== end-to-end tests (-m e2e) ==", flush=True)
        sys.stdout.write(log_path.read_text())
    print(f"\nmake test: not e2e exit {rest}, e2e exit {status}", flush=True)
    return combined(rest, status)


def combined(*statuses: int) -> int:
    """One exit status for both processes: the worse one, where a process that collected no test (5: PYTEST_ARGS
    selected tests of the other kind only) does not count; 5 when neither collected any."""
    ran = [s for s in statuses if s != NO_TESTS]
    return max(ran) if ran else NO_TESTS


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
