"""AP against kd FLOPs in a budget study: static subsets, their front, the policy, the controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
    without the budget). A record with a ``static_front`` adds every static subset (grey
    squares, named) and a line through the Pareto front among them."""
    figure, axes = plt.subplots(figsize=(8, 5))
    if record.get("static_front"):
        _draw_static_front(axes, record["static_front"])
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


def _draw_static_front(axes: plt.Axes, static: dict[str, Any]) -> None:
    rows = static["rows"]
    axes.errorbar(
        [row["kd_gflops_mean"] for row in rows],
        [100 * row["AP_mean"] for row in rows],
        yerr=[100 * row["AP_std"] for row in rows],
        fmt="s",
        color="tab:gray",
        alpha=0.45,
        label="static subsets",
    )
    for row in rows:
        axes.annotate(
            row["method"].removeprefix("static:"),
            (row["kd_gflops_mean"], 100 * row["AP_mean"]),
            fontsize=5,
            color="dimgray",
            xytext=(3, -6),
            textcoords="offset points",
        )
    front = [row for row in rows if row["method"] in static["front"]]
    axes.plot(
        [row["kd_gflops_mean"] for row in front],
        [100 * row["AP_mean"] for row in front],
        color="tab:gray",
        linestyle="--",
        linewidth=1,
        label="static front",
    )
