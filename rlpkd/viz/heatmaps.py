"""Layer-selection heatmaps: selection rate per level x object-size bin, x class, x training progress
and, when the decision log records it, x image scale regime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlpkd.data.size_bins import SIZE_BINS  # noqa: E402
from rlpkd.levels import LEVELS  # noqa: E402

__all__ = [
    "SelectionTable",
    "selection_tables",
    "plot_selection_heatmap",
    "write_heatmaps",
    "selection_differences",
    "largest_differences",
    "write_difference_heatmaps",
]


class SelectionTable:
    """Counts of decisions per column and of level selections per (level, column)."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name = name
        self.columns = list(columns)
        self.decisions = np.zeros(len(self.columns), dtype=np.int64)
        self.selected = np.zeros((len(LEVELS), len(self.columns)), dtype=np.int64)

    def add(self, column: str, levels: Sequence[str]) -> None:
        """Count one decision in ``column`` that chose ``levels``."""
        j = self.columns.index(column)
        self.decisions[j] += 1
        for level in levels:
            self.selected[LEVELS.index(level), j] += 1

    @property
    def rates(self) -> np.ndarray:
        """[4, columns] selection rate (NaN where a column has no decisions)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.decisions > 0, self.selected / self.decisions, np.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts and rates."""
        return {
            "columns": self.columns,
            "decisions": self.decisions.tolist(),
            "selected": {lv: self.selected[i].tolist() for i, lv in enumerate(LEVELS)},
        }


def selection_tables(
    decisions: list[dict[str, Any]], class_names: Sequence[str], progress_bins: int = 10
) -> dict[str, SelectionTable]:
    """The tables of a decision log: by size bin, by class, by training progress and (when its
    records carry a ``regime``) by image regime."""
    size = SelectionTable("size", [*SIZE_BINS, "none"])
    by_class = SelectionTable("class", class_names)
    edges = [f"{i / progress_bins:.1f}" for i in range(progress_bins)]
    progress = SelectionTable("progress", edges)
    for record in decisions:
        size.add(record["size_bin"], record["levels"])
        for name in record["classes"]:
            by_class.add(name, record["levels"])
        column = min(int(record["progress"] * progress_bins), progress_bins - 1)
        progress.add(edges[column], record["levels"])
    tables = {"size": size, "class": by_class, "progress": progress}
    regimes = sorted({record["regime"] for record in decisions if "regime" in record})
    if regimes:
        by_regime = SelectionTable("regime", regimes)
        for record in decisions:
            if "regime" in record:
                by_regime.add(record["regime"], record["levels"])
        tables["regime"] = by_regime
    return tables


def plot_selection_heatmap(table: SelectionTable, title: str) -> plt.Figure:
    """A level x column heatmap of selection rates, annotated with rate and decision count."""
    rates = table.rates
    figure, axes = plt.subplots(figsize=(0.8 * len(table.columns) + 2.5, 3.2))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = axes.imshow(np.ma.masked_invalid(rates), vmin=0, vmax=1, cmap=cmap, aspect="auto")
    axes.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    axes.set_yticks(range(len(LEVELS)), LEVELS)
    for i in range(len(LEVELS)):
        for j in range(len(table.columns)):
            text = "–" if np.isnan(rates[i, j]) else f"{rates[i, j]:.2f}"
            dark = np.isnan(rates[i, j]) or rates[i, j] > 0.6
            color = "black" if dark else "white"
            axes.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(f"{table.name} (decisions: {', '.join(map(str, table.decisions))})", fontsize=7)
    figure.colorbar(image, ax=axes, label="selection rate")
    figure.tight_layout()
    return figure


def write_heatmaps(
    decisions: list[dict[str, Any]], class_names: Sequence[str], out_dir: Path, writer=None
) -> dict[str, dict[str, Any]]:
    """``selection_by_{size,class,progress[,regime]}.png`` under ``out_dir`` (and TensorBoard);
    the counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = selection_tables(decisions, class_names)
    titles = {
        "size": "Selection rate per level x dominant object size",
        "class": "Selection rate per level x class",
        "progress": "Selection rate per level x training progress",
        "regime": "Selection rate per level x image scale regime",
    }
    for key, table in tables.items():
        figure = plot_selection_heatmap(table, titles[key])
        figure.savefig(out_dir / f"selection_by_{key}.png", dpi=120)
        if writer is not None:
            writer.add_figure(f"heatmaps/selection_by_{key}", figure)
        plt.close(figure)
    return {key: table.to_dict() for key, table in tables.items()}


def selection_differences(
    decisions: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    class_names: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Per table (size, class, progress, regime): the selection rates of ``decisions`` minus those
    of ``reference`` (e.g. a random control at the same cost), [4, columns], NaN where either has
    no decision, with the columns."""
    ours = selection_tables(decisions, class_names)
    theirs = selection_tables(reference, class_names)
    differences = {}
    for key, table in ours.items():
        if key not in theirs or theirs[key].columns != table.columns:
            continue
        differences[key] = {"columns": table.columns, "rates": table.rates - theirs[key].rates}
    return differences


def largest_differences(
    differences: dict[str, dict[str, Any]], count: int = 3
) -> list[tuple[str, str, str, float]]:
    """The ``count`` (table, column, level, difference) of largest magnitude."""
    found = []
    for key, entry in differences.items():
        rates = entry["rates"]
        for i, level in enumerate(LEVELS):
            for j, column in enumerate(entry["columns"]):
                if np.isfinite(rates[i, j]):
                    found.append((key, column, level, float(rates[i, j])))
    return sorted(found, key=lambda item: -abs(item[3]))[:count]


def write_difference_heatmaps(
    differences: dict[str, dict[str, Any]], reference_name: str, out_dir: Path
) -> list[Path]:
    """``selection_vs_<reference>_by_<table>.png``: level x column heatmaps of the differences
    (blue: the policy distils it more often than the reference, red: less)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, entry in differences.items():
        rates, columns = entry["rates"], entry["columns"]
        figure, axes = plt.subplots(figsize=(0.8 * len(columns) + 2.5, 3.2))
        cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="lightgrey")
        image = axes.imshow(np.ma.masked_invalid(rates), vmin=-1, vmax=1, cmap=cmap, aspect="auto")
        axes.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        axes.set_yticks(range(len(LEVELS)), LEVELS)
        for i in range(len(LEVELS)):
            for j in range(len(columns)):
                text = "–" if np.isnan(rates[i, j]) else f"{rates[i, j]:+.2f}"
                axes.text(j, i, text, ha="center", va="center", fontsize=8)
        axes.set_title(f"Selection rate: policy − {reference_name}, per level x {key}", fontsize=10)
        figure.colorbar(image, ax=axes, label="difference in selection rate")
        figure.tight_layout()
        path = out_dir / f"selection_vs_{reference_name.split('@')[0]}_by_{key}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
