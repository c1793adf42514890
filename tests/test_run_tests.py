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
