"""`train_rl`: the whole pipeline for one configuration (DESIGN §1).

Phase 0 data -> Phase 1 teacher -> Phase 2 policy learning (PPO on the per-sample level-selection
env, optionally warm-started) -> Phase 3 policy-guided distillation of fresh students (the frozen
policy picks levels per sample, the lazy teacher computes only those) and the baselines on the
same schedule and seeds -> Phase 4 evaluation, heatmaps and report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from experiments.controls import (
    POLICY_METHOD,
)
from experiments.policy_learning import (
    learn_policy,
)
from experiments.policy_students import oracle_selector, phase3_students, static_pair_finder
from experiments.resume_checks import check_inputs_and_checkpoints, check_resume
from experiments.rl_report import TrainedPhases, write_rl_report
from experiments.run_setup import open_run, student_inputs
from rlpkd.config import Config
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import LEVELS
from rlpkd.stop_signals import set_phase
from rlpkd.training.teacher_phase import load_or_train_teacher

__all__ = ["POLICY_METHOD", "run_rl_experiment"]


def _phase(name: str) -> None:
    set_phase(name)  # named by the line a stop signal ends the run with
    print(f"\n=== {name} ===", flush=True)


def run_rl_experiment(config: Config, resume: bool = False) -> dict[str, Any]:
    """Run phases 0-4 into ``config.runtime.out``; returns the report.

    Every phase reuses what an earlier run left when its fingerprint matches (teacher, snapshot
    pool, students) and redoes it otherwise; PPO continues its checkpoint only with ``resume``.

    Raises:
        ResumeMismatchError: ``resume`` with a config that differs from the run's where it
            matters (``check_resume``); nothing is written.
        CheckpointError: a file the run would load is truncated or foreign
            (``check_inputs_and_checkpoints``); nothing is written.
    """
    start = time.perf_counter()
    progress = config.runtime.progress
    if resume:
        check_resume(config)
    _phase("Phase 0: data")
    opened = open_run(config)  # validates the data before anything is written
    device, datasets, run_dir = opened.device, opened.datasets, opened.run_dir
    check_inputs_and_checkpoints(config, run_dir, resume, datasets.num_classes)
    if config.experiment.headroom_report:
        oracle_selector(config, datasets)  # a report that does not fit: before any write
    # config.yaml is written only now: the config is final, validated and fits the run
    run_dir.prepare(config)

    _phase("Phase 1: teacher")
    teacher, teacher_metrics = load_or_train_teacher(config, datasets, device, run_dir, progress)
    print(f"teacher val AP = {100 * teacher_metrics['AP']:.1f}")
    flops = flops_model_from_config(config, datasets.num_classes)

    _phase("Phase 2: policy learning (PPO)")
    learning = learn_policy(config, run_dir, datasets, teacher, resume)
    weights = Path(learning["weights"])

    _phase("Phase 3: policy-guided distillation and baselines")
    inputs = student_inputs(config, opened, teacher)
    all_flops = flops.kd_flops(LEVELS)
    runs, policy_fraction = phase3_students(
        inputs, weights, all_flops, static_pair_finder(learning, flops)
    )

    _phase("Phase 4: report")
    phases = TrainedPhases(teacher, teacher_metrics, learning, flops, runs, policy_fraction)
    return write_rl_report(config, datasets, run_dir, phases, time.perf_counter() - start)
