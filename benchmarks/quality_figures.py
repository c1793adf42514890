"""The quality benchmark's figures: the plot of distance against evaluations per model (docs/quality.png) and
the trained models' sample grids (docs/quality_samples_<model>.png)."""

from __future__ import annotations

import math
from pathlib import Path

from quality_ranking import Results, Row, Suite

FAMILY_STYLE = {"Few-Step recipe (best)": ("crimson", "o"), "Few-Step tuned (best)": ("darkgreen", "s"),
                "Few-Step learned (best)": ("purple", "v"),
                "ceiling (Powell)": ("black", "^"), "best core pair per NFE": ("royalblue", "D"),
                "DPM++2M Karras": ("darkorange", ".")}


def families(results: Results) -> dict[str, dict[int, float]]:
    """Distance (mean FD) against evaluations per method family: the best recipe row, the best tuned row, the
    ceiling, the best core pair at each budget, and DPM++2M Karras by step count."""
    out: dict[str, dict[int, float]] = {name: {} for name in FAMILY_STYLE}
    for budget in results.config.budgets:
        for row in results.table(budget):
            m = row.method
            family = ("ceiling (Powell)" if m.family == "ceiling" else "Few-Step tuned (best)" if
                      m.family.startswith("FewStep tuned") else "Few-Step learned (best)" if
                      m.family.startswith("FewStep learned") else "Few-Step recipe (best)" if m.pack else
                      "best core pair per NFE")
            if math.isfinite(row.mean_fd):
                out[family][budget] = min(row.mean_fd, out[family].get(budget, math.inf))
    out[results.config.sweep_label] = {m: r.mean_fd for m, r in results.sweep.items() if math.isfinite(r.mean_fd)}
    return out


def plot(suite: Suite, path: Path) -> None:
    """FD against NFE (log scale), one panel per model, one line per method family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(suite.models))
    rows = math.ceil(len(suite.models) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(suite.models):]:
        ax.axis("off")
    for ax, results in zip(axes.flat, suite.models):
        for family, points in families(results).items():
            if not points:
                continue
            sweep = family == results.config.sweep_label
            color, marker = FAMILY_STYLE["DPM++2M Karras" if sweep else family]
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker=marker, color=color, label=family,
                    linewidth=1.0 if sweep else 1.8, markersize=4 if sweep else 6)
        if results.floor is not None:
            ax.axhline(Row.stats(results.floor.fd)[0], color="gray", linestyle=":", label="exact samples (FD floor)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [t for t in (1, 2, 3, 5, 8, 12, 20, 40) if t <= max(results.sweep or {12: 0})]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("model evaluations (NFE)")
        ax.set_title(f"{results.model} ({'trained' if results.trained else 'analytic'})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for row_axes in axes:
        row_axes[0].set_ylabel("FD (exact model / own reference)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.suptitle(f"Quality: distance against evaluations, {suite.label.split(' (')[0]}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sample_grid(results: Results, images, path: Path) -> None:
    """The trained model's pictures: the reference, then at 5, 6 and 8 evaluations the best Few-Step row and DPM++2M
    Karras (the same noises, seed 0), decoded by ``images`` (the proxy's latent_to_image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [(f"reference ({results.shift.steps} steps)", results.reference_preview)]
    for budget in results.config.ranked_budgets:
        best = results.best_fewstep(budget)
        dpmpp = next((r for r in results.table(budget) if r.method.name == "dpmpp_2m / karras"), None)
        dpmpp = dpmpp or results.sweep.get(budget)
        if best is not None:
            lines.append((f"{best.method.name}, NFE {budget}", best.preview))
        if dpmpp is not None:
            lines.append((f"DPM++2M Karras, {dpmpp.method.steps} steps", dpmpp.preview))
    count = lines[0][1].shape[0]
    fig, axes = plt.subplots(len(lines), count, figsize=(1.1 * count + 2.6, 1.15 * len(lines)), squeeze=False)
    for (label, latents), ax_row in zip(lines, axes):
        pictures = images(latents).clamp(0, 1)
        for ax, picture in zip(ax_row, pictures):
            ax.imshow(picture.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{results.model}: the same noises, seed 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
