"""The budget study (issue 19): ``train_rl`` at each KD budget, the policy against every control.

For each budget ``b``: a ``train_rl`` run into ``<out>/budget-<b>`` with ``rl.budget = b`` and
every control on every seed (``experiment.control_seeds`` = ``experiment.seeds``, so each
difference is paired). The teacher, the snapshot pool and the decision bank do not depend on the
budget: the first run makes them, the later ones reuse them (hard links), and the no-KD and
all-level students, which do not depend on it either, are reused the same way.

After the budgets, the static front (``experiments.static_front``): every fixed level subset
over the same seeds, trained once in the first budget's run.

Writes ``<out>/budget_study.json`` (every budget's comparison and the static front),
``budget_study.md`` (per budget: the sentence and the paired-difference table, with 95% t
intervals; then each control pooled over the budgets, ``rlpkd.report.pooled_budgets``; then the
static subsets) and ``budget_study.png`` (AP against kd FLOPs: the static subsets and their front,
the policy at each budget, each control).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.controls import POLICY_METHOD, control_kind
from experiments.rl_pipeline import run_rl_experiment
from experiments.static_front import (
    ALL_STATIC_SPECS,
    STATIC_PREFIX,
    static_front_jobs,
    static_front_record,
    train_static_front,
)
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config
from rlpkd.report.budget_comparison import budget_comparison, budget_report_lines
from rlpkd.report.pooled_budgets import pooled_budget_lines, pooled_over_budgets
from rlpkd.report.verification import best_static_at_or_below
from rlpkd.rundir import write_json
from rlpkd.viz.budget_plot import budget_plot

__all__ = [
    "budget_config",
    "reuse_budget_free_work",
    "reuse_static_students",
    "run_budget_study",
    "budget_study_markdown",
    "static_front_markdown",
    "comparison_from_students",
]

SHARED_CHECKPOINTS = ("teacher.pt", "snapshots")
"""What every budget's run shares (none of it depends on ``rl.budget``)."""
SHARED_STUDENTS = ("none", "all")


def budget_config(config: Config, budget: float, out: Path) -> Config:
    """``config`` at ``budget``, writing to ``out``, every control on every seed."""
    rl = dataclasses.replace(config.rl, budget=float(budget))
    experiment = dataclasses.replace(config.experiment, control_seeds=[])
    runtime = dataclasses.replace(config.runtime, out=str(out))
    return dataclasses.replace(config, rl=rl, experiment=experiment, runtime=runtime)


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of ``source`` under ``target`` (copy where links are refused)."""
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        return
    for child in source.iterdir():
        _link_tree(child, target / child.name)


def reuse_budget_free_work(first: Path, later: Path, seeds: list[int]) -> None:
    """Give the run ``later`` what the run ``first`` made that no budget changes: the teacher,
    the snapshot pool with its decision bank, and the no-KD and all-level students (each is
    reused only when its own fingerprint matches, as in any ``train_rl`` run)."""
    for name in SHARED_CHECKPOINTS:
        if (first / "checkpoints" / name).exists():
            _link_tree(first / "checkpoints" / name, later / "checkpoints" / name)
    for method in SHARED_STUDENTS:
        for seed in seeds:
            student = first / "students" / f"{method}-seed{seed}"
            if (student / "metrics.json").is_file():
                _link_tree(student, later / "students" / student.name)


def reuse_static_students(out: Path, first: Path) -> None:
    """Give the first budget's run the static-front students another budget's run of the study
    holds (a study rerun with another first budget), each reused only by its fingerprint."""
    for run in sorted(out.glob("budget-*")):
        if run != first:
            for student in sorted((run / "students").glob(f"{STATIC_PREFIX}*")):
                _link_tree(student, first / "students" / student.name)


def run_budget_study(
    config: Config, budgets: list[float], static_specs: Sequence[str] = ALL_STATIC_SPECS
) -> dict[str, Any]:
    """Run every budget, then the static subsets ``static_specs`` (module docstring; none: no
    static front) into ``config.runtime.out``; returns the record."""
    static_front_jobs(static_specs, config.experiment.seeds)  # a bad subset: before any work
    out = Path(config.runtime.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"budgets": [], "seeds": list(config.experiment.seeds)}
    record["budget_pace"] = list(config.rl.budget_pace)
    first: Path | None = None
    for budget in budgets:
        run_out = out / f"budget-{budget:.2f}"
        if first is not None:
            reuse_budget_free_work(first, run_out, config.experiment.seeds)
        print(f"\n##### budget {budget:.2f} -> {run_out}", flush=True)
        report = run_rl_experiment(budget_config(config, budget, run_out))
        first = first or run_out
        record["budgets"].append(
            {
                "budget": budget,
                "run": str(run_out),
                "comparison": report["budget"],
                "phase2_budget": report.get("phase2_budget", {}),
                "phase2_verdict": report.get("phase2_verdict", ""),
                "methods": [
                    {**row, "kind": control_kind(row["method"])} for row in report["methods"]
                ],
                "kd_gflops_all_levels": report["kd_gflops_all_levels"],
                "value_greedy_signal_gflops_per_image": report.get(
                    "value_greedy_signal_gflops_per_image"
                ),
            }
        )
        record["pooled"] = pooled_over_budgets([entry["comparison"] for entry in record["budgets"]])
        write_json(out / "budget_study.json", record)  # after every budget: a partial study shows
    if first is not None and static_specs:
        first_config = budget_config(config, budgets[0], first)
        reuse_static_students(out, first)
        weights = first / "checkpoints" / "policy_weights.pt"
        runs = train_static_front(first_config, first, static_specs, weights)
        all_levels = record["budgets"][0]["kd_gflops_all_levels"]
        record["static_front"] = static_front_record(runs, all_levels)
        write_json(out / "budget_study.json", record)
    budget_plot(record, out / "budget_study.png")
    atomic_write_text(out / "budget_study.md", budget_study_markdown(record))
    return record


def budget_study_markdown(record: dict[str, Any]) -> str:
    """The study as Markdown: per budget its sentence and paired-difference table, then each
    control pooled over the budgets and the static subsets."""
    lines = [
        "# Budget study: the policy against every control at the same KD cost",
        "",
        f"Seeds {', '.join(map(str, record['seeds']))}; differences are policy − control in AP "
        "points, paired by seed, with 95% t intervals. AP against kd FLOPs: `budget_study.png`.",
        "",
    ]
    if record.get("budget_pace"):
        lines += [f"Budget pace (rl.budget_pace): {record['budget_pace']}.", ""]
    for entry in record["budgets"]:
        lines += budget_report_lines(entry["comparison"])[2:]  # without the section heading
        policy = next((r for r in entry["methods"] if r["method"] == POLICY_METHOD), None)
        if policy is not None:
            lines.append(
                f"Policy AP {100 * policy['AP_mean']:.1f} ± {100 * policy['AP_std']:.1f} "
                f"(seeds {policy['seeds']}); Phase 2: {entry['phase2_verdict']}; value-greedy's "
                f"signal costs {entry['value_greedy_signal_gflops_per_image']:.3g} GFLOPs per "
                f"image against {entry['kd_gflops_all_levels']:.3g} for all-level KD."
            )
        lines.append("")
    lines += pooled_budget_lines(record.get("pooled", []))
    if record.get("static_front"):
        lines += static_front_markdown(record)
    return "\n".join(lines)


def static_front_markdown(record: dict[str, Any]) -> list[str]:
    """The static subsets as a table (those on the Pareto front in bold), and per budget the
    best static AP at or below the policy's cost."""
    front = record["static_front"]
    lines = [
        "**The static subsets** (each fixed for every sample; in bold: the Pareto front):",
        "",
        "| subset | kd FLOPs (fraction) | AP (%) |",
        "|---|---|---|",
    ]
    for row in front["rows"]:
        name = f"**{row['method']}**" if row["method"] in front["front"] else row["method"]
        lines.append(
            f"| {name} | {row['kd_fraction_mean']:.3f} | "
            f"{100 * row['AP_mean']:.1f} ± {100 * row['AP_std']:.1f} |"
        )
    lines.append("")
    for entry in record["budgets"]:
        policy = next((r for r in entry["methods"] if r["method"] == POLICY_METHOD), None)
        if policy is None:
            continue
        measured = [row for row in front["rows"] if math.isfinite(row["AP_mean"])]
        methods = [row["method"] for row in measured]
        best = best_static_at_or_below(measured, methods, policy["kd_gflops_mean"])
        if best is None:
            continue
        lines.append(
            f"- At budget {entry['budget']:.2f} the best static subset at or below the policy's "
            f"cost is {best['method']} ({100 * best['AP_mean']:.1f} AP, "
            f"{best['kd_fraction_mean']:.3f} of all-level kd FLOPs); the policy: "
            f"{100 * policy['AP_mean']:.1f}."
        )
    lines.append("")
    return lines


def comparison_from_students(run: Path) -> dict[str, Any]:
    """A budget run's comparison rebuilt from what is on disk: its ``report.json`` (the budget,
    the pace, all-level kd GFLOPs, the methods its last invocation ran) and the ``metrics.json``
    of every student of those methods under ``students/``, whatever invocation trained each
    seed. For a study whose seeds were added in pieces (each piece's report pairs only its own
    seeds); ``pooled_over_budgets`` pools these.

    Only the methods of the last report count: a student of another method may have been
    trained under another config (a copied run, another ``rl.budget_pace``), and only the last
    invocation checked its fingerprint.
    """
    report = json.loads((run / "report.json").read_text())
    kinds = {row["method"]: control_kind(row["method"]) for row in report["methods"]}
    students = [json.loads(p.read_text()) for p in sorted(run.glob("students/*/metrics.json"))]
    runs = [student for student in students if student["method"] in kinds]
    stored = report["budget"]
    return budget_comparison(
        runs,
        stored["budget"],
        POLICY_METHOD,
        kinds,
        report["kd_gflops_all_levels"],
        stored.get("pace", []),
    )
