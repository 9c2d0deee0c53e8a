"""The sweep report's text and files: RL λ front vs NAS picks vs the 16 static subsets vs baselines
(DESIGN §7, §8).

Reads ``<sweep>/trials/*/metrics.json`` (one per finished trial; ``rlpkd.report.sweep_layout``),
groups trials into one row per method (mean ± std over seeds; ``rlpkd.report.sweep_rows``), and
writes ``report.json``, ``report.md``, ``results.csv`` and ``plots/pareto.png`` under the sweep
directory. Works on partial sweeps: unfinished trials have no metrics file and are skipped; absent
kinds simply have no rows.

A trial that diverged has ``<trial>/failed.json`` (``rlpkd.report.sweep_layout.FAILED_FILE``) and
counts as failed even beside a stale ``metrics.json``: it is listed under "Failed trials", its
method's row says so in a ``status`` column (a method with no finished seed has a row of n/a,
never AP 0.0), and it is left out of every mean, the static front, the best static subset and the
plot.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlpkd.atomic_files import atomic_write_text
from rlpkd.errors import DataError
from rlpkd.report.sweep_layout import collect_failed_trials, collect_trials, sweep_lam
from rlpkd.report.sweep_rows import (
    SEARCH_COST_METRICS,
    STATUS_FINISHED,
    comparison_rows,
    comparison_summary,
)
from rlpkd.report.tables import REPORT_METRICS, format_markdown_table
from rlpkd.rundir import write_json
from rlpkd.viz.pareto import pareto_plot

__all__ = [
    "comparison_table",
    "summary_sentences",
    "results_csv",
    "write_comparison_report",
    "build_sweep_report",
]

DEFAULT_TITLE = "RL-PyramidKD sweep: RL λ front vs NAS vs static level subsets"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Writing: report.json, report.md, results.csv, plots/pareto.png


def _seeds_text(seeds: Iterable[Any]) -> str:
    return ",".join(str(s) for s in seeds)


def _picks_text(picks: dict[Any, str]) -> str:
    """'P2 (seeds 0,1); P2,P3 (seed 2)': one entry per distinct pick."""
    by_pick: dict[str, list[Any]] = defaultdict(list)
    for seed, pick in sorted(picks.items(), key=lambda item: int(item[0])):
        by_pick[pick].append(seed)
    parts = []
    for pick, seeds in by_pick.items():
        label = "seeds" if len(seeds) > 1 else "seed"
        parts.append(f"{pick} ({label} {_seeds_text(seeds)})")
    return "; ".join(parts)


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else ""


def _status_text(row: dict[str, Any]) -> str:
    """'finished', 'failed (seeds 0,1)' or 'partly failed (seed 1)'."""
    status = row.get("status", STATUS_FINISHED)
    seeds = row.get("failed_seeds", [])
    if not seeds:
        return status
    label = "seeds" if len(seeds) > 1 else "seed"
    return f"{status} ({label} {_seeds_text(seeds)})"


def _extra_columns(rows: list[dict[str, Any]], lam: float) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "kind": lambda r: (
            f"{r['kind']} ({r['control_kind']})" if r.get("control_kind") else r["kind"]
        )
    }
    if any(r.get("failed_seeds") for r in rows):
        columns["status"] = _status_text
    if lam != 0.0:
        columns[f"score (λ={lam:g}) %"] = lambda r: _number(100 * r["score"], ".2f")
    if any(_finite(r.get("subset_regime_mi_bits_mean")) for r in rows):
        columns["I(subset; regime) bits"] = lambda r: _number(
            r.get("subset_regime_mi_bits_mean"), ".3f"
        )
    if any(r["kind"] == "nas" for r in rows):
        columns["search_s"] = lambda r: _number(r.get("search_wall_time_s_mean"), ".0f")
        columns["search_kd_gflops"] = lambda r: _number(r.get("search_kd_gflops_mean"), ".4g")
        columns["search_evals"] = lambda r: _number(r.get("search_evaluations_mean"), "g")
        columns["search cost / exhaustive"] = lambda r: _number(
            r.get("search_cost_fraction"), ".3f"
        )
        columns["picks"] = lambda r: _picks_text(r["picks"]) if "picks" in r else ""
    return columns


def comparison_table(rows: list[dict[str, Any]], lam: float = 0.0) -> str:
    """The Markdown table of the rows (tables.format_markdown_table plus kind/score/search columns)."""
    return format_markdown_table(rows, _extra_columns(rows, lam))


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %" if _finite(value) else "n/a"


def _best_static_sentence(summary: dict[str, Any]) -> str:
    best = summary["best_static"]
    if best is None:
        if summary["lam"] != 0.0 and not _finite(summary["kd_gflops_normaliser"]):
            return "best static subset: unknown (a λ > 0 score needs the finished 'all' trial)"
        return "best static subset: unknown (no finished static trials)"
    text = f"best static subset: {best['method']} (AP {_percent(best['AP_mean'])}"
    if summary["lam"] != 0.0:
        text += f", score {100 * best['score']:.2f} % at λ={summary['lam']:g}"
    text += f", {best['kd_gflops_mean']:.3g} kd GFLOPs)"
    if best["runner_up"] is not None:
        unit = "points of score" if summary["lam"] != 0.0 else "points"
        text += (
            f"; runner-up {best['runner_up']} by {100 * best['margin_to_runner_up']:.2f} {unit}"
            f" (AP std {100 * best['AP_std']:.2f})"
        )
    return text


def _nas_sentence(method: str, outcome: dict[str, Any]) -> str:
    found = {True: "yes", False: "no", None: "unknown"}[outcome["found"]]
    text = f"{method} picked {_picks_text(outcome['picks'])}; the best static: {found}"
    if outcome["found"] is False and _finite(outcome["regret"]):
        text += f" (its picks score {100 * outcome['regret']:.2f} points lower on the static grid)"
    if _finite(outcome["search_cost_fraction"]):
        text += f"; search time {outcome['search_cost_fraction']:.3f} of exhaustive's"
    return text


def _relation(diff: float) -> str:
    relation = "above" if diff > 0 else "below" if diff < 0 else "level with it"
    return relation + (f" by {abs(diff):.2f} points" if diff != 0 else "")


def _rl_controls_text(outcome: dict[str, Any]) -> str:
    """'; vs its control (the policy's masks permuted across each batch) → above by 0.10 points
    (± 0.20 std, 2 paired seeds); …; I(subset; regime) = 0.01 bits (shuffled 0.00)', the parts
    that are known."""
    text = ""
    for control in outcome.get("controls", []):
        seeds = control["seeds"]
        text += (
            f"; vs {control['name']} ({control['description']}) → "
            f"{_relation(control['points'])} (± {control['std_points']:.2f} std, {seeds} paired "
            f"seed{'s' if seeds != 1 else ''})"
        )
    mi = outcome.get("subset_regime_mi_bits", math.nan)
    if _finite(mi):
        shuffled = outcome.get("shuffled_subset_regime_mi_bits", math.nan)
        text += f"; I(subset; regime) = {mi:.3f} bits"
        text += f" (shuffled {shuffled:.3f})" if _finite(shuffled) else ""
    return text


def _per_seed_text(outcome: dict[str, Any]) -> str:
    """'; per seed, each at its own kd GFLOPs: below by 0.40 points (± 0.30 std, 2 seeds; front
    P2,P4 / none)' when every seed has a front point at or below its cost."""
    if outcome.get("per_seed_above") is None:
        return ""
    seeds = outcome["per_seed"]
    fronts = " / ".join(str(s["front_method"]) for s in seeds)
    return (
        f"; per seed, each at its own kd GFLOPs: {_relation(outcome['per_seed_diff_points'])} "
        f"(± {outcome['per_seed_diff_std_points']:.2f} std, {len(seeds)} seed"
        f"{'s' if len(seeds) != 1 else ''}; front {fronts})"
    )


def _rl_sentence(outcome: dict[str, Any]) -> str:
    head = (
        f"{outcome['method']}: {_percent(outcome['AP_mean'])} at "
        f"{outcome['kd_gflops_mean']:.3g} kd GFLOPs"
    )
    if outcome["above"] is None:
        return (
            f"{head}; no static front point at or below that cost"
            f"{_per_seed_text(outcome)}{_rl_controls_text(outcome)}"
        )
    return (
        f"{head} vs static front {_percent(outcome['front_AP'])} ({outcome['front_method']})"
        f" → {_relation(outcome['diff_points'])} (± {outcome['diff_std_points']:.2f} combined "
        f"std){_per_seed_text(outcome)}{_rl_controls_text(outcome)}"
    )


def summary_sentences(summary: dict[str, Any]) -> list[str]:
    """The summary as plain sentences, one per finding."""
    lines = [_best_static_sentence(summary)]
    lines += [_nas_sentence(m, o) for m, o in summary["nas_found_best_static"].items()]
    front = summary["static_front"]
    if front:
        points = ", ".join(f"{p['method']} ({_percent(p['AP_mean'])})" for p in front)
        lines.append(f"static Pareto front (cheapest first): {points}")
    lines += [_rl_sentence(o) for o in summary["rl_vs_static_front"]]
    return lines


def _failure_lines(failed: list[dict[str, Any]]) -> list[str]:
    if not failed:
        return []
    lines = [
        "",
        "## Failed trials",
        "",
        "These trials diverged; they have no result and are left out of every mean, the static "
        "front, the best static subset and the plot.",
        "",
    ]
    for failure in failed:
        lines.append(
            f"- {failure['trial_id']} ({failure['kind']} {failure['method']}, seed "
            f"{failure['seed']}): {failure['error']}"
        )
    return lines


def _markdown(title: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in summary["kinds"].items() if n)
    failed = summary.get("failed_trials", [])
    failed_text = f"; {len(failed)} failed (see Failed trials)" if failed else ""
    lines = [
        f"# {title}",
        "",
        f"{summary['n_trials']} finished trials ({kinds}){failed_text}; λ = {summary['lam']:g}.",
        "",
        comparison_table(rows, summary["lam"]),
        "",
        "AP columns are COCO AP in %, mean ± std over seeds; kd_gflops are teacher + KD GFLOPs per "
        "training image; search columns are means over seeds of the search alone (device seconds, "
        "total kd GFLOPs, evaluations), the retraining of the pick excluded. An `rl-control` row "
        "is a control its RL row trained at the policy's measured kd FLOPs (the table of "
        "`experiments/controls.py`; its own kind in brackets, its description in the summary), "
        "e.g. `shuffled`: the policy's masks permuted across each batch, the same FLOPs without "
        "conditioning on the sample; I(subset; regime) is the mutual "
        "information between the chosen subset and the image's scale regime over the student's "
        "decisions (plug-in estimate; near 0 for a policy that does not condition on the regime).",
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in summary_sentences(summary)],
        *_failure_lines(failed),
    ]
    return "\n".join(lines) + "\n"


def _csv_columns(controls: Iterable[str] = ()) -> list[str]:
    """The CSV's columns; ``controls``: the names of the RL trials' controls (one pair of
    ``minus_<name>_AP_mean/std`` columns each)."""
    metrics = [f"{m}_{stat}" for m in REPORT_METRICS for stat in ("mean", "std")]
    search = [f"{m}_{stat}" for m in SEARCH_COST_METRICS for stat in ("mean", "std")]
    return [
        "method",
        "kind",
        "status",
        "failed_seeds",
        "lam",
        "n",
        "seeds",
        *metrics,
        "score",
        "subset_regime_mi_bits_mean",
        "control",
        "control_kind",
        *(f"minus_{name}_AP_{stat}" for name in controls for stat in ("mean", "std")),
        *search,
        "search_cost_fraction",
        "search_kd_gflops_fraction",
        "search_devices",
        "picks",
    ]


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def results_csv(rows: list[dict[str, Any]]) -> str:
    """One CSV line per method; missing values are empty cells, picks as 'seed:subset;...';
    ``status`` is 'finished', 'partly failed' or 'failed' (then every metric cell is empty)."""
    buffer = io.StringIO()
    controls = list(dict.fromkeys(name for row in rows for name in row.get("controls", [])))
    columns = _csv_columns(controls)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = {key: _csv_value(row.get(key)) for key in columns}
        record["seeds"] = _seeds_text(row["seeds"])
        record["status"] = row.get("status", STATUS_FINISHED)
        record["failed_seeds"] = _seeds_text(row.get("failed_seeds", []))
        record["search_devices"] = ";".join(row.get("search_devices", []))
        record["picks"] = ";".join(f"{s}:{p}" for s, p in row.get("picks", {}).items())
        writer.writerow(record)
    return buffer.getvalue()


def write_comparison_report(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    title: str = DEFAULT_TITLE,
) -> dict[str, Path]:
    """``report.json``, ``report.md``, ``results.csv``, ``plots/pareto.png``; their paths by name
    (``report.json`` also lists ``failed_trials``, from the summary)."""
    sweep_dir = Path(sweep_dir)
    paths = {
        "json": sweep_dir / "report.json",
        "markdown": sweep_dir / "report.md",
        "csv": sweep_dir / "results.csv",
        "pareto": sweep_dir / "plots" / "pareto.png",
    }
    write_json(
        paths["json"],
        {
            "title": title,
            "methods": rows,
            "summary": summary,
            "failed_trials": summary.get("failed_trials", []),
        },
    )
    atomic_write_text(paths["markdown"], _markdown(title, rows, summary))
    atomic_write_text(paths["csv"], results_csv(rows))
    pareto_plot(rows, summary, paths["pareto"], title)
    return paths


def build_sweep_report(sweep_dir: Path, lam: float | None = None) -> dict[str, Any]:
    """Collect the finished and failed trials, summarise and write the report (lam: config's
    search.lam). A sweep whose trials all failed still gets a report listing them.

    Returns {"methods": rows, "summary": summary, "failed": failed trials, "paths": {name: Path}}.
    """
    sweep_dir = Path(sweep_dir)
    trials = collect_trials(sweep_dir)
    failed = collect_failed_trials(sweep_dir)
    if not trials and not failed:
        raise DataError(f"no finished trials under {sweep_dir / 'trials'} (no */metrics.json yet)")
    lam = sweep_lam(sweep_dir) if lam is None else float(lam)
    rows = comparison_rows(trials, lam, failed)
    summary = comparison_summary(rows, lam, failed)
    paths = write_comparison_report(sweep_dir, rows, summary)
    return {"methods": rows, "summary": summary, "failed": failed, "paths": paths}
