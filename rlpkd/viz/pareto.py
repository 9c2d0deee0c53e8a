"""The sweep's Pareto plot: AP against teacher + KD GFLOPs for static subsets, RL, NAS, baselines.

``pareto_series`` turns report rows into the points to draw (what a test can check); ``draw_pareto``
draws them, each series' artist tagged with a gid ('static', 'static-front', 'rl', 'rl-seeds',
'nas:<method>', 'baselines', 'reference', 'control:<name>'); ``pareto_plot`` writes the PNG.
The RL trials' controls are drawn per control name, labelled by the description their rows carry
(``experiments.controls`` is the one table of them): the plot knows none of them by name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlpkd.atomic_files import atomic_write  # noqa: E402

__all__ = [
    "pareto_series",
    "draw_pareto",
    "pareto_plot",
    "static_subset_points",
    "draw_static_subsets",
]

NAS_MARKERS: tuple[str, ...] = ("^", "v", "o", "h", "p", "<", ">")
CONTROL_KIND = "rl-control"
"""The kind of an RL trial's control row (``rlpkd.report.sweep_rows.CONTROL_KIND``)."""
CONTROL_MARKERS: tuple[str, ...] = ("v", "^", "<", ">", "P", "X", "d", "*", "8", "H")
REFERENCE_LABELS = {"none": "no KD", "all": "all levels"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _std(value: Any) -> float:
    return value if _finite(value) else 0.0


def _point(row: dict[str, Any], label: str) -> dict[str, Any]:
    """A plotted point: AP and its std in %, kd GFLOPs and its std."""
    return {
        "label": label,
        "kd_gflops": row["kd_gflops_mean"],
        "kd_gflops_std": _std(row.get("kd_gflops_std")),
        "ap": 100.0 * row["AP_mean"],
        "ap_std": 100.0 * _std(row.get("AP_std")),
    }


def _plottable(row: dict[str, Any]) -> bool:
    """A row with a finite AP and kd_gflops from at least one finished seed (a failed method's
    row, status 'failed', is never drawn, whatever numbers it holds)."""
    if row.get("status") == "failed" or row.get("n", 1) == 0:
        return False
    return _finite(row.get("AP_mean")) and _finite(row.get("kd_gflops_mean"))


def _picks_label(picks: dict[Any, str]) -> str:
    distinct = sorted(set(picks.values()))
    return "/".join(distinct) if distinct else "?"


def _rl_label(row: dict[str, Any], suffix: str = "") -> str:
    """'λ=0.1' plus ``suffix`` for an RL row; its method plus ``suffix`` when it has no λ."""
    return f"λ={row['lam']:g}{suffix}" if _finite(row.get("lam")) else f"{row['method']}{suffix}"


def pareto_series(rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """The points to draw per series; failed rows and rows without a finite AP or kd_gflops
    are skipped.

    Returns {"static", "front", "rl", "rl_seeds", "baselines", "reference": [point],
    "nas": {method: point}, "controls": {name: {"description", "points"}}}; ``rl_seeds`` holds
    each RL seed at its own cost (seeds of one λ can land far apart, so their mean point alone
    can sit where no seed is); ``controls`` the RL trials' controls at their FLOPs, per name.
    """
    plotted = [row for row in rows if _plottable(row)]
    static = [row for row in plotted if row["kind"] == "static"]
    rl = sorted((row for row in plotted if row["kind"] == "rl"), key=lambda r: r["kd_gflops_mean"])
    front = [_point(p, p["method"]) for p in summary.get("static_front", []) if _plottable(p)]
    return {
        "static": [_point(row, row["method"]) for row in static],
        "front": front,
        "rl": [_point(row, _rl_label(row)) for row in rl],
        "rl_seeds": [
            {
                "label": _rl_label(row, f" seed {seed['seed']}"),
                "kd_gflops": seed["kd_gflops"],
                "kd_gflops_std": 0.0,
                "ap": 100.0 * seed["AP"],
                "ap_std": 0.0,
            }
            for row in rl
            for seed in row.get("seed_points", [])
        ],
        "nas": {
            row["method"]: _point(row, f"{row['method']} → {_picks_label(row.get('picks', {}))}")
            for row in plotted
            if row["kind"] == "nas"
        },
        "controls": _control_series(plotted),
        "baselines": [_point(row, row["method"]) for row in plotted if row["kind"] == "baseline"],
        "reference": [
            _point(row, REFERENCE_LABELS[row["method"]])
            for row in static
            if row["method"] in REFERENCE_LABELS
        ],
    }


def _control_series(plotted: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{control name: {"description", "points"}} of the RL trials' control rows."""
    series: dict[str, dict[str, Any]] = {}
    for row in plotted:
        if row["kind"] != CONTROL_KIND:
            continue
        name = row.get("control", row["method"])
        entry = series.setdefault(name, {"description": row.get("description", name), "points": []})
        label = f"λ={row['lam']:g} {name}" if _finite(row.get("lam")) else row["method"]
        entry["points"].append(_point(row, label))
    return series


def _xy(points: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    return [p["kd_gflops"] for p in points], [p["ap"] for p in points]


def _label_point(
    axes: plt.Axes, point: dict[str, Any], offset: tuple[float, float], fontsize: float, color: str
) -> None:
    """Write ``point``'s label beside it, ``offset`` points away."""
    axes.annotate(
        point["label"],
        (point["kd_gflops"], point["ap"]),
        xytext=offset,
        textcoords="offset points",
        fontsize=fontsize,
        color=color,
    )


def static_subset_points(
    rows: list[dict[str, Any]], front_methods: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The points of static-subset rows (method, ``AP_mean``, ``kd_gflops_mean``, stds; labelled
    by their levels) and of those whose method is in ``front_methods``, by cost, as
    ``draw_static_subsets`` draws them; rows without a finite AP or cost are left out."""
    plotted = [row for row in rows if _plottable(row)]
    static = [_point(row, row["method"].removeprefix("static:")) for row in plotted]
    front = [
        point for row, point in zip(plotted, static, strict=True) if row["method"] in front_methods
    ]
    return static, sorted(front, key=lambda point: point["kd_gflops"])


def draw_static_subsets(
    axes: plt.Axes, static: list[dict[str, Any]], front: list[dict[str, Any]]
) -> None:
    """Grey labelled points for the static subsets and a dashed step through their front (the
    best AP of one fixed subset at or below each cost)."""
    if static:
        x, y = _xy(static)
        grid = axes.scatter(x, y, s=18, color="0.6", zorder=2, label="static subsets")
        grid.set_gid("static")
        for point in static:
            if point["label"] in REFERENCE_LABELS:  # labelled as a reference point instead
                continue
            _label_point(axes, point, (3, 3), 5.5, "0.35")
    if front:
        x, y = _xy(front)
        (line,) = axes.step(x, y, where="post", color="0.3", lw=1.2, ls="--", label="static front")
        line.set_gid("static-front")


def _marked_series(series: dict[str, Any]) -> list[tuple[str, list, str, str, str]]:
    """(gid, points, marker, colour, legend label) of the reference, baseline and control series."""
    marked = [
        ("reference", series["reference"], "s", "black", "no KD / all levels"),
        ("baselines", series["baselines"], "D", "tab:purple", "baselines"),
    ]
    for i, (name, control) in enumerate(series.get("controls", {}).items()):
        marker = CONTROL_MARKERS[i % len(CONTROL_MARKERS)]
        label = f"RL control {name}: {control['description']}"
        if len(label) > 70:
            label = label[:67] + "..."
        marked.append((f"control:{name}", control["points"], marker, f"C{(i + 3) % 10}", label))
    return marked


def _draw_reference_and_baselines(axes: plt.Axes, series: dict[str, Any]) -> None:
    for key, points, marker, color, label in _marked_series(series):
        if not points:
            continue
        x, y = _xy(points)
        drawn = axes.errorbar(
            x,
            y,
            yerr=[p["ap_std"] for p in points],
            fmt=marker,
            ms=7,
            color=color,
            mfc="white",
            mew=1.5,
            capsize=2,
            zorder=4,
            label=label,
        )
        drawn.lines[0].set_gid(key)
        for point in points:
            _label_point(axes, point, (4, -9), 6.5, color)


def _draw_rl(axes: plt.Axes, series: dict[str, Any]) -> None:
    points = series["rl"]
    if not points:
        return
    x, y = _xy(points)
    drawn = axes.errorbar(
        x,
        y,
        yerr=[p["ap_std"] for p in points],
        xerr=[p["kd_gflops_std"] for p in points],
        fmt="-o",
        ms=5,
        color="tab:blue",
        capsize=2,
        zorder=5,
        label="RL policy (λ sweep)",
    )
    drawn.lines[0].set_gid("rl")
    if series.get("rl_seeds"):
        x, y = _xy(series["rl_seeds"])
        seeds = axes.scatter(
            x, y, s=22, facecolors="none", edgecolors="tab:blue", zorder=5, label="RL seeds"
        )
        seeds.set_gid("rl-seeds")
    for point in points:
        _label_point(axes, point, (4, 4), 7, "tab:blue")


def _draw_nas(axes: plt.Axes, series: dict[str, Any]) -> None:
    # Hollow, large and shrinking per method: picks that coincide with each other or with a static
    # point stay visible as concentric outlines.
    for i, (method, point) in enumerate(series["nas"].items()):
        drawn = axes.errorbar(
            [point["kd_gflops"]],
            [point["ap"]],
            yerr=[point["ap_std"]],
            fmt=NAS_MARKERS[i % len(NAS_MARKERS)],
            ms=max(16 - 2.5 * i, 7),
            mfc="none",
            mew=1.8,
            color=f"C{(i + 1) % 10}",
            capsize=2,
            zorder=6,
            label=point["label"],
        )
        drawn.lines[0].set_gid(f"nas:{method}")


def draw_pareto(series: dict[str, Any], title: str) -> plt.Figure:
    """The Pareto figure of ``pareto_series`` output (the caller closes it)."""
    figure, axes = plt.subplots(figsize=(8.0, 5.5))
    draw_static_subsets(axes, series["static"], series["front"])
    _draw_reference_and_baselines(axes, series)
    _draw_rl(axes, series)
    _draw_nas(axes, series)
    axes.set_xlabel("teacher + KD GFLOPs per training image")
    axes.set_ylabel("AP (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    else:
        axes.text(0.5, 0.5, "no finished trials to plot", ha="center", transform=axes.transAxes)
    figure.tight_layout()
    return figure


def pareto_plot(
    rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str
) -> Path:
    """Write the Pareto plot of report rows to ``path`` (PNG, replaced atomically)."""
    figure = draw_pareto(pareto_series(rows, summary), title)
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=130))
    finally:
        plt.close(figure)
