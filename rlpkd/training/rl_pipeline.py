"""`train_rl`: the whole pipeline for one configuration (DESIGN §1).

Phase 0 data -> Phase 1 teacher -> Phase 2 policy learning (PPO on the per-sample level-selection
env, optionally warm-started) -> Phase 3 policy-guided distillation of fresh students (the frozen
policy picks levels per sample, the lazy teacher computes only those) and the baselines on the
same schedule and seeds -> Phase 4 evaluation, heatmaps and report.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from rlpkd.config import Config, config_to_dict
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.flops.kd_flops import FlopsModel, flops_model_from_config
from rlpkd.levels import LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.decision_log import DecisionLog, read_decisions
from rlpkd.report.tables import summarise_methods, write_report
from rlpkd.rundir import RunDirectory, write_json
from rlpkd.training.distill_run import StepHook
from rlpkd.training.runtime import configure_runtime
from rlpkd.training.student_phase import (
    finished_student_metrics,
    run_student,
    selector_from_spec,
    selector_key,
    student_fingerprint,
)
from rlpkd.training.teacher_phase import load_or_train_teacher
from rlpkd.viz.heatmaps import write_heatmaps

__all__ = [
    "POLICY_METHOD",
    "learn_policy",
    "policy_selector",
    "policy_step_hook",
    "run_rl_experiment",
]

POLICY_METHOD = "rl-policy"


def _phase(name: str) -> None:
    print(f"\n=== {name} ===", flush=True)


def learn_policy(
    config: Config,
    run_dir: RunDirectory,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    resume: bool,
    teacher_checkpoint: Path | None = None,
    snapshot_dir: Path | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Phase 2: snapshot pool, PPO (warm-started if configured); saves the policy's weights.

    Args:
        teacher_checkpoint: the frozen teacher the env loads (default ``<out>/checkpoints/teacher.pt``).
        snapshot_dir: where the snapshot pool lives (default ``<out>/checkpoints/snapshots``;
            a sweep shares one pool between its RL trials).
        on_iteration: called with each PPO iteration's summary (e.g. to report it to Ray Tune).

    Returns the learning record: history, time, extra FLOPs of learning, weights path and, with a
    warm start and ``meta.compare_scratch``, the scratch curve.
    """
    from envs.observation import OBS_DIM
    from envs.snapshots import build_snapshot_pool
    from policies.ppo_setup import ensure_ray, train_policy
    from policies.weights import module_state, save_weights_file

    progress = config.runtime.progress
    snapshot_dir = snapshot_dir or run_dir.checkpoints / "snapshots"
    teacher_checkpoint = teacher_checkpoint or run_dir.checkpoints / "teacher.pt"
    build_snapshot_pool(config, datasets, teacher, snapshot_dir, progress)
    env_config = {
        "config": config_to_dict(config),
        "teacher_checkpoint": str(teacher_checkpoint),
        "snapshot_dir": str(snapshot_dir),
        "seed": config.runtime.seed,
    }
    ensure_ray()
    warm_start = Path(config.meta.warm_start) if config.meta.warm_start else None
    start = time.perf_counter()
    algo, history = train_policy(
        config,
        env_config,
        config.rl.iterations,
        run_dir.checkpoints / "policy",
        warm_start=warm_start,
        resume=resume,
        progress=progress,
        on_iteration=on_iteration,
    )
    try:
        weights_path = save_weights_file(
            run_dir.checkpoints / "policy_weights.pt",
            module_state(algo),
            obs_dim=OBS_DIM,
            hidden_sizes=config.rl.hidden_sizes,
            metadata={"iterations": len(history), "warm_start": str(warm_start or "")},
        )
    finally:
        algo.stop()
    record: dict[str, Any] = {
        "history": history,
        "learning_time_s": sum(h.get("time_s", 0.0) for h in history)
        or time.perf_counter() - start,
        "weights": str(weights_path),
        "warm_start": str(warm_start or ""),
    }
    last = history[-1] if history else {}
    record["gap_eval_gflops_per_decision"] = last.get(
        "level_selection_env/gap_eval_gflops_per_decision", float("nan")
    )
    if warm_start is not None and config.meta.compare_scratch:
        from policies.reptile import adaptation_curve

        record["scratch_curve"] = adaptation_curve(config, env_config, None, config.rl.iterations)
    return record


def _student_runs(config: Config, policy_fraction: float) -> list[tuple[str, str]]:
    """(method name, level spec) of every Phase-3 run; the policy's spec is 'policy'."""
    runs = [(POLICY_METHOD, "policy"), ("none", "none"), ("all", "all")]
    runs.append((f"random@{policy_fraction:.2f}", f"random:{policy_fraction:.4f}"))
    runs += [(spec, spec) for spec in config.rl.static_baselines]
    return list(dict.fromkeys(runs))


def policy_selector(config: Config, weights: Path, seed: int) -> Any:
    """The frozen policy as a ``PolicyLevels`` selector, fingerprinted by its weights file."""
    from policies.policy_selector import PolicyLevels

    selector = PolicyLevels.from_weights_file(
        weights,
        config.data.level_thresholds,
        greedy=config.rl.greedy,
        seed=seed,
        name=POLICY_METHOD,
    )
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    selector.fingerprint = f"{POLICY_METHOD}:{digest}:greedy={config.rl.greedy}"
    return selector


def policy_step_hook(
    config: Config, datasets: DetectionDatasets, selector: Any, student_dir: RunDirectory
) -> StepHook:
    """The Phase-3 step hook of a policy-guided run: keeps the policy's running KD gap current
    and logs every decision to ``<student_dir>/decisions.jsonl``."""
    steps = config.student_schedule.epochs * (
        len(datasets.train) // config.student_schedule.batch_size
    )
    log = DecisionLog(student_dir.path / "decisions.jsonl", datasets.train.class_names, steps)

    def on_step(step, batch, mask, terms):
        selector.update_running_gap(terms.kd_raw, mask)
        log(step, batch, mask)

    return on_step


def _distil(
    config: Config,
    run_dir: RunDirectory,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    flops: FlopsModel,
    device: torch.device,
    method: str,
    spec: str,
    seed: int,
    weights: Path,
) -> dict[str, Any]:
    """One Phase-3 student (reused if it already finished with this config)."""
    student_dir = RunDirectory(run_dir.path / "students" / f"{method}-seed{seed}")
    on_step = None
    if spec == "policy":
        selector = policy_selector(config, weights, seed)
        on_step = policy_step_hook(config, datasets, selector, student_dir)
    else:
        selector = selector_from_spec(spec, flops, seed, config.data.level_thresholds)
    fingerprint = student_fingerprint(config, seed, selector_key(selector))
    previous = finished_student_metrics(student_dir, fingerprint)
    if previous is not None:
        previous["method"] = method
        return previous
    print(f"[phase 3] {method} seed={seed} -> {student_dir.path}", flush=True)
    metrics = run_student(
        config,
        datasets,
        teacher,
        selector,
        seed,
        student_dir,
        flops,
        device,
        config.runtime.progress,
        on_step=on_step,
    )
    metrics["method"] = method
    student_dir.write_metrics(metrics)
    print(f"    AP = {100 * metrics['AP']:.1f}  kd_gflops = {metrics['kd_gflops']:.3f}", flush=True)
    return metrics


def run_rl_experiment(config: Config, resume: bool = False) -> dict[str, Any]:
    """Run phases 0-4 into ``config.runtime.out``; returns the report."""
    start = time.perf_counter()
    progress = config.runtime.progress
    device = configure_runtime(config.runtime)
    _phase("Phase 0: data")
    datasets = build_datasets(config.data, progress)  # validates before anything is written
    run_dir = RunDirectory(config.runtime.out).prepare(config)
    writer = SummaryWriter(str(run_dir.tensorboard / "report"))

    _phase("Phase 1: teacher")
    teacher, teacher_metrics = load_or_train_teacher(config, datasets, device, run_dir, progress)
    print(f"teacher val AP = {100 * teacher_metrics['AP']:.1f}")
    flops = flops_model_from_config(config, datasets.num_classes)

    _phase("Phase 2: policy learning (PPO)")
    learning = learn_policy(config, run_dir, datasets, teacher, resume)
    write_json(run_dir.path / "policy_learning.json", learning)
    weights = Path(learning["weights"])

    _phase("Phase 3: policy-guided distillation and baselines")
    runs: list[dict[str, Any]] = []
    seeds = config.experiment.seeds
    for seed in seeds:
        runs.append(
            _distil(
                config,
                run_dir,
                datasets,
                teacher,
                flops,
                device,
                POLICY_METHOD,
                "policy",
                seed,
                weights,
            )
        )
    all_flops = flops.kd_flops(LEVELS)
    policy_fraction = sum(r["kd_gflops"] for r in runs) / len(runs) * 1e9 / all_flops
    for method, spec in _student_runs(config, policy_fraction)[1:]:
        for seed in seeds:
            runs.append(
                _distil(
                    config, run_dir, datasets, teacher, flops, device, method, spec, seed, weights
                )
            )

    _phase("Phase 4: report")
    decisions = read_decisions(
        run_dir.path / "students" / f"{POLICY_METHOD}-seed{seeds[0]}" / "decisions.jsonl"
    )
    heatmaps = write_heatmaps(decisions, datasets.train.class_names, run_dir.plots, writer)
    writer.close()
    rows = summarise_methods(runs)
    extra = {
        "teacher_AP": teacher_metrics["AP"],
        "policy_kd_flops_fraction": policy_fraction,
        "kd_gflops_all_levels": all_flops / 1e9,
        "student_train_gflops": flops.student_train_flops() / 1e9,
        "policy_learning_time_s": learning["learning_time_s"],
        "policy_learning_gap_eval_gflops_per_decision": learning["gap_eval_gflops_per_decision"],
        "wall_time_s": time.perf_counter() - start,
        "policy_learning_curve": [h.get("episode_return_mean") for h in learning["history"]],
        "scratch_curve": learning.get("scratch_curve"),
        "heatmap_counts": heatmaps,
    }
    write_report(run_dir.path, "RL-PyramidKD: policy vs baselines", rows, extra)
    policy_row = next(r for r in rows if r["method"] == POLICY_METHOD)
    run_dir.write_metrics(
        {
            **{k.removesuffix("_mean"): v for k, v in policy_row.items() if k.endswith("_mean")},
            "student_train_gflops": extra["student_train_gflops"],
            "wall_time_s": extra["wall_time_s"],
            "method": POLICY_METHOD,
            "policy_kd_flops_fraction": policy_fraction,
        }
    )
    return {"methods": rows, **extra}
