"""The 30-candidate rule in seconds: the new search's share at 30 candidates against the recorded old search.

``benchmarks/tuner_search.py`` runs the old compass search to convergence for every row (minutes per model) to get
the improvement the rule measures against. That old search does not change, so its converged objective, recorded
with each row's start in docs/tuner_search.md (seed 0), docs/tuner_search_seedN.md and
docs/tuner_search_trained.md, can be read back instead: this script runs only the current search, capped at 30
candidates (the search is the same whatever the cap, so the first 30 candidates of a longer one are these), on the
same probes and reference, and prints each row's share (start - objective at 30) / (start - old converged) and
how many rows reach SHARE (0.9). A row whose recomputed start differs from the recorded one is flagged: the docs
are then out of date and the share means nothing. For trying a change to the search before running the full
benchmark; the docs are written by ``tuner_search.py`` only.

    python benchmarks/tuner_rule30.py                  # the analytic rows of docs/tuner_search.md (seconds)
    python benchmarks/tuner_rule30.py --model-seed 1   # docs/tuner_search_seed1.md
    python benchmarks/tuner_rule30.py --trained        # docs/tuner_search_trained.md, through ComfyUI (~1 min)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
if str(REPO) not in sys.path:  # as a script; under pytest ComfyUI comes first (its `nodes`, not the pack's)
    sys.path.insert(0, str(REPO))

from tuner_search import PROBE_SEED, analytic_models, exact_denoiser, load_quality, noise  # noqa: E402
from tuner_search_report import SHARE, TRAINED_PROBES  # noqa: E402

from fewstep.schedule import standard_sigma_table  # noqa: E402
from fewstep.tuner import compute_reference, denoiser_run, tune  # noqa: E402

CANDIDATES = 30
ROW = re.compile(r"\| (\w+) \| (\w+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \(")


def recorded(path: Path) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(model, solver, NFE) -> (start, old converged objective) from a tuner_search page's first table."""
    rows = {}
    for line in path.read_text().splitlines():
        if match := ROW.match(line):
            rows.setdefault((match[1], match[2], int(match[3])), (float(match[4]), float(match[5])))
    return rows


def shares(name: str, run, table, rows, log=print) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(model, solver, NFE) -> (share, objective) at CANDIDATES of every recorded row of model ``name``."""
    reference = compute_reference(run, table)
    found = {}
    for (model, solver, nfe), (start, old) in rows.items():
        if model != name:
            continue
        result = tune(run, table, nfe, solver, time_budget=math.inf, max_candidates=CANDIDATES, reference=reference)
        share = (start - result.objective) / (start - old)
        stale = "" if abs(result.start_objective - start) <= 1e-4 * max(1.0, start) else \
            f"  STALE: start {result.start_objective:.4f} against the recorded {start}"
        log(f"{model:18s} {solver:9s} {nfe:2d}  start {start:.4f}  old converged {old:.4f}  at {CANDIDATES} "
            f"{result.objective:.4f}  share {share:.3f}{'' if share >= SHARE else '  < ' + str(SHARE)}{stale}")
        found[model, solver, nfe] = (share, result.objective)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-seed", type=int, default=0, help="the analytic models drawn with this seed")
    parser.add_argument("--trained", action="store_true", help="the trained proxies' rows instead")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began, found = time.monotonic(), {}
    if args.trained:
        from quality_methods import load_comfyui
        from quality_trained import TrainedTarget, trained_models

        rows = recorded(REPO / "docs" / "tuner_search_trained.md")
        comfy = load_comfyui()
        for name, model in trained_models().items():
            if not any(key[0] == name for key in rows):
                continue
            target = TrainedTarget(comfy, model)
            table = target.ms.sigmas.double().cpu()
            x = torch.randn((TRAINED_PROBES, *target.latent_shape), generator=torch.Generator().manual_seed(PROBE_SEED))
            found |= target.with_denoiser(x, lambda denoiser, x_start, name=name, table=table: shares(
                name, denoiser_run(denoiser, x_start, table), table, rows))
    else:
        page = "tuner_search.md" if args.model_seed == 0 else f"tuner_search_seed{args.model_seed}.md"
        rows = recorded(REPO / "docs" / page)
        table = standard_sigma_table()
        for name, (_, model) in analytic_models(load_quality(), args.model_seed).items():
            x = noise(64, PROBE_SEED, (4, 8, 8), float(table[-1]))
            found |= shares(name, denoiser_run(exact_denoiser(model), x, table), table, rows)
    reached = sum(share >= SHARE for share, _ in found.values())
    print(f"{reached} of {len(found)} rows reach {SHARE:.0%} of the old converged improvement within {CANDIDATES} "
          f"candidates ({time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
