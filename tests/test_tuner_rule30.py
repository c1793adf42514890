"""benchmarks/tuner_rule30.py against the page it reads: docs/tuner_search.md says what today's search does.

The rig reads each row's start and the old search's converged objective from the page and recomputes the new
search's share at 30 candidates; the page's own objective after 30 candidates was written by tuner_search.py
from the full search's history. On one analytic model the two must agree (to the page's four digits): a change
to the search that is not followed by `make bench-tuner` fails here (as the held-out pages once went stale for
four days).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "benchmarks"))  # the benchmark's modules import each other by name, as its script does

PAGE = REPO / "docs" / "tuner_search.md"
MODEL = "anisotropic"  # the model whose rows reach 90 % slowest: the first 30 candidates matter most there


def page_objectives() -> dict[tuple[str, str, int], float]:
    """(model, solver, NFE) -> the new search's objective after 30 candidates, from the page's table of objectives
    (``| model | solver | NFE | new | obj@10 | obj@30 | ...``)."""
    found = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and cells[3] == "new" and re.fullmatch(r"\d+", cells[2]):
            found[cells[0], cells[1], int(cells[2])] = float(cells[5])
    return found


def test_the_rig_reads_every_row_and_reproduces_the_page_on_one_model():
    from tuner_rule30 import PROBE_SEED, analytic_models, exact_denoiser, load_quality, noise, recorded, shares

    from fewstep.schedule import standard_sigma_table
    from fewstep.tuner import denoiser_run

    rows = recorded(PAGE)
    expected = page_objectives()
    assert len(rows) == 45 and set(rows) == set(expected)  # 3 models x 5 solvers (auto and 4 named) x NFE 5, 6, 8
    table = standard_sigma_table()
    model = analytic_models(load_quality())[MODEL][1]
    lines: list[str] = []
    found = shares(MODEL, denoiser_run(exact_denoiser(model), noise(64, PROBE_SEED, (4, 8, 8), float(table[-1])),
                                       table), table, rows, log=lines.append)
    assert set(found) == {key for key in rows if key[0] == MODEL} and len(found) == 15
    assert not any("STALE" in line for line in lines), lines
    for key, (_, at_30) in found.items():
        assert abs(at_30 - expected[key]) <= 1e-4 + 1e-3 * expected[key], (key, at_30, expected[key])
