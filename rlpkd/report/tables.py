"""Method tables: one row per method, mean ± std over seeds, as JSON and Markdown."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlpkd.atomic_files import atomic_write_text
from rlpkd.rundir import write_json

__all__ = [
    "REPORT_METRICS",
    "format_number",
    "mean_std",
    "summarise_methods",
    "format_markdown_table",
    "write_report",
]

REPORT_METRICS: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "kd_gflops",
    "wall_time_s",
)


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample std of the finite values (None/NaN skipped); NaN, NaN when none are finite."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def summarise_methods(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group per-seed run metrics by ``method``: {method, seeds, n, <metric>_mean, <metric>_std}."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["method"]].append(run)
    rows = []
    for method, members in groups.items():
        row: dict[str, Any] = {
            "method": method,
            "seeds": sorted(run["seed"] for run in members),
            "n": len(members),
        }
        for metric in REPORT_METRICS:
            mean, std = mean_std([run.get(metric, math.nan) for run in members])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        rows.append(row)
    return rows


def _cell(row: dict[str, Any], metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if not math.isfinite(mean):
        return "n/a"
    if metric.startswith("AP"):
        return f"{100 * mean:.1f} ± {100 * std:.1f}" if row["n"] > 1 else f"{100 * mean:.1f}"
    if metric == "kd_gflops":
        return f"{mean:.3f}"
    return f"{mean:.0f}"


def format_markdown_table(
    rows: list[dict[str, Any]],
    extra_columns: Mapping[str, Callable[[dict[str, Any]], str]] | None = None,
) -> str:
    """A Markdown table (AP columns in %, mean ± std over seeds).

    Args:
        rows: ``summarise_methods`` rows.
        extra_columns: header -> cell formatter, appended after the metric columns.
    """
    extra = dict(extra_columns or {})
    header = ["method", "seeds", *REPORT_METRICS, *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], ",".join(map(str, row["seeds"]))]
        cells += [_cell(row, metric) for metric in REPORT_METRICS]
        cells += [format_cell(row) for format_cell in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_number(key: str, value: float | int | str) -> str:
    """A report value for people: an AP (a key ending in ``AP``, or ``AP_…``) as a percentage
    with one decimal, other floats to three significant digits (whole numbers from 1,000 on),
    ints and strings as they are."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    name = key.rsplit(".", 1)[-1]
    if name.endswith("AP") or "_AP_" in name or name.startswith("AP_"):
        return f"{100 * value:.1f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def write_report(
    out: Path,
    title: str,
    rows: list[dict[str, Any]],
    extra: dict[str, Any],
    preamble: list[str] | None = None,
) -> None:
    """``report.json`` (rows + extra) and ``report.md``: title, ``preamble`` (Markdown lines, e.g.
    a verdict that must come first), table, and the scalar ``extra`` items as a list
    (``format_number``; nested values are in the JSON only)."""
    write_json(out / "report.json", {"methods": rows, **extra})
    lines = [f"# {title}", "", *(preamble or []), format_markdown_table(rows), ""]
    lines.append(
        "AP columns are COCO AP in %, mean ± std over seeds; kd_gflops per training image."
    )
    for key, value in extra.items():
        if isinstance(value, (int, float, str)):
            lines.append(f"- {key}: {format_number(key, value)}")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
