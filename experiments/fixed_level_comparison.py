"""The substrate's experiment: teacher, then students with fixed level sets over seeds, then a report.

Phase 0 data -> Phase 1 teacher (reused if trained for this config) -> students for every
``experiment.level_sets`` x ``experiment.seeds`` and every ``experiment.ablation`` x
``experiment.ablation_seeds`` -> ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import time
from typing import Any

from experiments.run_setup import open_run, prepare_run, student_inputs
from rlpkd.config import Config
from rlpkd.report.tables import summarise_methods, write_report
from rlpkd.rundir import RunDirectory
from rlpkd.training.student_phase import (
    run_or_reuse_student,
    selector_from_spec,
)

__all__ = ["planned_student_runs", "run_fixed_level_comparison"]


def planned_student_runs(config: Config) -> list[tuple[str, int]]:
    """(level spec, seed) of every student run, main comparison first, without duplicates."""
    runs: list[tuple[str, int]] = []
    for spec in config.experiment.level_sets:
        runs += [(spec, seed) for seed in config.experiment.seeds]
    for spec in config.experiment.ablation:
        runs += [(spec, seed) for seed in config.experiment.ablation_seeds]
    return list(dict.fromkeys(runs))


def _run_name(spec: str, seed: int) -> str:
    return f"{spec.replace(',', '+').replace(':', '-')}-seed{seed}"


def run_fixed_level_comparison(config: Config) -> dict[str, Any]:
    """Run the whole comparison into ``config.runtime.out``; returns the report."""
    start = time.perf_counter()
    opened = open_run(config)  # validates the data before anything is written
    run_dir = opened.run_dir
    print(f"[phase 1] teacher -> {run_dir.checkpoints / 'teacher.pt'}")
    teacher, teacher_metrics = prepare_run(config, opened)
    print(f"[phase 1] teacher val AP = {100 * teacher_metrics['AP']:.1f}")
    inputs = student_inputs(config, opened, teacher)
    flops = inputs.flops
    runs = []
    for index, (spec, seed) in enumerate(planned_student_runs(config)):
        student_dir = RunDirectory(run_dir.path / "students" / _run_name(spec, seed))
        selector = selector_from_spec(spec, flops, seed, config.data.level_thresholds)
        title = f"[students {index + 1}] levels={spec} seed={seed}"
        runs.append(run_or_reuse_student(inputs, selector, seed, student_dir, title))
    rows = summarise_methods(runs)
    extra = {
        "teacher_AP": teacher_metrics["AP"],
        "teacher_train_time_s": teacher_metrics.get("train_time_s"),
        "student_train_gflops": flops.student_train_flops() / 1e9,
        "kd_gflops_all_levels": flops.kd_flops(("P2", "P3", "P4", "P5")) / 1e9,
        "wall_time_s": time.perf_counter() - start,
        "teacher": teacher_metrics,
    }
    write_report(run_dir.path, "Fixed-level KD comparison", rows, extra)
    run_dir.write_metrics(
        {**teacher_metrics, "wall_time_s": extra["wall_time_s"], "role": "teacher"}
    )
    return {"methods": rows, **extra}
