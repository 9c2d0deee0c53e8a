"""AP against kd FLOPs in a budget study: static subsets, their front, the policy, the controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlpkd.viz.pareto import draw_static_subsets, static_subset_points  # noqa: E402

__all__ = ["KIND_STYLES", "budget_plot"]

KIND_STYLES: dict[str, tuple[str, str]] = {
    "policy": ("*", "tab:red"),
    "reference": ("s", "black"),
    "static": ("s", "tab:gray"),
    "random": ("o", "tab:blue"),
    "temporal": ("^", "tab:green"),
    "heuristic": ("D", "tab:orange"),
    "policy-derived": ("v", "tab:pink"),
    "bound": ("P", "tab:purple"),
}
"""Marker (and the policy's colour) per method kind (``experiments.controls.control_kind``);
every other method has its own colour."""


def budget_plot(record: dict[str, Any], path: Path) -> Path:
    """One point per (budget, method): mean AP (%) with its std over seeds against mean kd GFLOPs
    per image; the marker says the method's kind, the colour the method (labelled by name
    without the budget). A record with a ``static_front`` adds every static subset and the step
    through their front as the sweep's Pareto plot draws them (``draw_static_subsets``)."""
    figure, axes = plt.subplots(figsize=(8, 5))
    if record.get("static_front"):
        static = record["static_front"]
        draw_static_subsets(axes, *static_subset_points(static["rows"], static["front"]))
    labelled: set[str] = set()
    names = sorted({row["method"].split("@")[0] for e in record["budgets"] for row in e["methods"]})
    palette = matplotlib.colormaps["tab20"]
    for entry in record["budgets"]:
        for row in entry["methods"]:
            marker, _ = KIND_STYLES.get(row["kind"], ("x", "black"))
            name = row["method"].split("@")[0]
            colour = "tab:red" if row["kind"] == "policy" else palette(names.index(name) % 20)
            axes.errorbar(
                row["kd_gflops_mean"],
                100 * row["AP_mean"],
                yerr=100 * row["AP_std"],
                fmt=marker,
                color=colour,
                alpha=0.8,
                label=None if name in labelled else name,
            )
            labelled.add(name)
    budgets = ", ".join(f"{entry['budget']:.2f}" for entry in record["budgets"])
    axes.set_xlabel("kd GFLOPs per training image")
    axes.set_ylabel("COCO AP (%)")
    axes.set_title(f"AP against KD cost at budgets {budgets} (mean ± std over seeds)", fontsize=10)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
