"""The headroom report's plots: mean level value by regime x level, and AP against kd GFLOPs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlpkd.atomic_files import atomic_write  # noqa: E402

__all__ = ["regime_level_panels", "plot_regime_level_values", "plot_headroom_methods"]


def regime_level_panels(values: dict[str, Any]) -> list[tuple[str, list[str], np.ndarray]]:
    """(title, regimes, [regimes, levels] mean value in std units) for each snapshot, then pooled.

    ``values`` is the report's ``values`` section (``experiments.headroom``): per snapshot its
    ``normalised_mean_by_regime`` and ``anova``; pooled, ``by_regime`` means of the pooled
    (already normalised) matrix.
    """
    panels = []
    for snapshot in values["snapshots"]:
        means = snapshot["normalised_mean_by_regime"]
        share = snapshot["anova"]["interaction_share"]
        title = (
            f"snapshot {snapshot['fraction']:g} (step {snapshot['step']})\ninteraction {share:.2f}"
        )
        panels.append((title, list(means), np.array(list(means.values()), dtype=np.float64)))
    pooled = values["pooled"]
    means = {regime: entry["mean"] for regime, entry in pooled["by_regime"].items()}
    title = f"pooled\ninteraction {pooled['anova']['interaction_share']:.2f}"
    panels.append((title, list(means), np.array(list(means.values()), dtype=np.float64)))
    return panels


def plot_regime_level_values(values: dict[str, Any], levels: Sequence[str], path: Path) -> Path:
    """Heatmaps of the mean ``v_il`` (in units of each snapshot's std) by regime x level, one
    panel per snapshot and one pooled; written atomically to ``path``."""
    panels = regime_level_panels(values)
    limit = max(float(np.nanmax(np.abs(matrix))) for _, _, matrix in panels) or 1.0
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.4 * len(panels) + 2.2, 3.4),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, (title, regimes, matrix) in zip(axes[0], panels, strict=True):
        image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(levels)), list(levels))
        ax.set_yticks(range(len(regimes)), regimes, fontsize=8)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(title, fontsize=8)
    figure.suptitle(
        "mean level value v_il by image regime (in units of each snapshot's std)", fontsize=10
    )
    figure.colorbar(image, ax=axes[0].tolist(), label="mean v / std", shrink=0.9)
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(figure)


def plot_headroom_methods(
    static_runs: list[dict[str, Any]], methods: dict[str, dict[str, Any]], path: Path
) -> Path:
    """AP (%) against kd GFLOPs per image: the static subsets (one seed, labelled) and the compared
    methods (mean ± std over seeds); written atomically to ``path``."""
    figure, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [run["kd_gflops"] for run in static_runs]
    ys = [100 * run["AP"] for run in static_runs]
    ax.scatter(xs, ys, color="grey", s=18, label="static subsets (seed 0)", gid="static")
    for run, x, y in zip(static_runs, xs, ys, strict=True):
        ax.annotate(run["levels"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    markers = ("*", "s", "D", "^", "v", "o")
    for (name, method), marker in zip(methods.items(), markers, strict=False):
        ap_std = method["AP_std"]
        ap_std = ap_std if isinstance(ap_std, float) and math.isfinite(ap_std) else 0.0
        ax.errorbar(
            method["kd_gflops_mean"],
            100 * method["AP_mean"],
            yerr=100 * ap_std,
            fmt=marker,
            markersize=9 if marker == "*" else 6,
            capsize=3,
            label=f"{name} ({method['levels']}, n={len(method['seeds'])})",
            gid=f"method:{name}",
        )
    ax.set_xlabel("kd GFLOPs per training image")
    ax.set_ylabel("val AP (%)")
    ax.set_title("Per-image oracle against static level subsets", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    figure.tight_layout()
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(figure)
