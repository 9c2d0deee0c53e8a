"""Train and evaluate one student for a level spec and seed, writing its run directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch.utils.tensorboard import SummaryWriter

from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.fingerprint import fingerprint
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.teacher_cache import TeacherFeatureCache
from rlpkd.rundir import RunDirectory, read_json
from rlpkd.training.distill_run import StepHook, distill_student
from rlpkd.training.level_selection import (
    SCALE_RULE,
    FingerprintedSelector,
    FixedLevels,
    LevelSelector,
    RandomLevels,
    ScaleRuleLevels,
    parse_level_spec,
)

__all__ = [
    "selector_from_spec",
    "STUDENT_SECTIONS",
    "student_fingerprint",
    "selector_key",
    "finished_student_metrics",
    "StudentRunInputs",
    "run_student",
    "run_or_reuse_student",
]


def selector_from_spec(
    spec: str, flops: FlopsModel, seed: int, thresholds: Sequence[float] | None = None
) -> LevelSelector:
    """A LevelSelector for 'none' / 'all' / 'P2,P4' / 'random:FRACTION' / 'scale-rule'
    (``thresholds``: the FCOS level boundaries, ``data.level_thresholds``, needed by the last)."""
    kind, value = parse_level_spec(spec)
    if kind == SCALE_RULE:
        if thresholds is None:
            raise ValueError("the scale rule needs the level thresholds (data.level_thresholds)")
        return ScaleRuleLevels(thresholds)
    if kind == "random":
        return RandomLevels(flops.inclusion_prob_for_fraction(value), value, seed)
    return FixedLevels(value)


STUDENT_SECTIONS = ("data", "teacher", "student", "teacher_schedule", "student_schedule")
STUDENT_SECTIONS += ("distill", "eval")
"""The config sections that decide a student run (the rl, meta and experiment sections only
choose which runs happen)."""


def student_fingerprint(config: Config, seed: int, selector_key: str) -> str:
    """A hash of what determines a student run: data, models, schedules, KD, eval, teacher seed,
    student seed and the selector (not the rl/meta/experiment sections, which only choose runs)."""
    return fingerprint(
        config,
        STUDENT_SECTIONS,
        {"teacher_seed": config.runtime.seed, "seed": seed, "selector": selector_key},
    )


def selector_key(selector: LevelSelector) -> str:
    """What identifies a selector's choices: its ``fingerprint`` if it has one, else its name."""
    if isinstance(selector, FingerprintedSelector):
        return str(selector.fingerprint)
    return str(selector.name)


def finished_student_metrics(run_dir: RunDirectory, fingerprint: str) -> dict | None:
    """The metrics of a student run that already finished with this fingerprint, else None."""
    path = run_dir.path / "metrics.json"
    if path.is_file():
        metrics = read_json(path)
        if metrics.get("student_fingerprint") == fingerprint:
            return metrics
    return None


@dataclass(frozen=True)
class StudentRunInputs:
    """What every student run of an experiment shares."""

    config: Config
    """The resolved config (``runtime.progress`` shows or hides the progress bars)."""
    datasets: DetectionDatasets
    """Training and validation data."""
    teacher: PyramidDetector
    """The frozen teacher, on ``device``."""
    flops: FlopsModel
    """KD and student FLOPs of this teacher/student pair."""
    device: torch.device
    """Where the student trains."""

    @cached_property
    def teacher_cache(self) -> TeacherFeatureCache | None:
        """The memo of the teacher's pyramid every student of these inputs shares
        (``runtime.teacher_cache_gb``; None when 0)."""
        budget = self.config.runtime.teacher_cache_gb
        return TeacherFeatureCache(self.teacher, budget) if budget > 0 else None


def run_student(
    inputs: StudentRunInputs,
    selector: LevelSelector,
    seed: int,
    run_dir: RunDirectory,
    on_step: StepHook | None = None,
    method: str | None = None,
) -> dict:
    """Distil a fresh student whose levels ``selector`` picks; write and return its metrics.

    The run resumes from ``checkpoints/student_resume_<fingerprint>.pt`` if an earlier attempt with
    the same fingerprint (config, seed, selector) was interrupted. ``method`` is the metrics'
    method label (default: the selector's name).
    """
    config, datasets, flops, device = inputs.config, inputs.datasets, inputs.flops, inputs.device
    progress = config.runtime.progress
    start = time.perf_counter()
    fingerprint = student_fingerprint(config, seed, selector_key(selector))
    run_dir.prepare(config, write_config=False)  # config.yaml goes beside the metrics
    writer = SummaryWriter(str(run_dir.tensorboard))
    student, objective, stats = distill_student(
        config,
        datasets,
        inputs.teacher,
        selector,
        seed,
        device,
        flops.subset_kd_flops(),
        writer=writer,
        progress=progress,
        on_step=on_step,
        checkpoint_path=run_dir.checkpoints / f"student_resume_{fingerprint}.pt",
        teacher_cache=inputs.teacher_cache,
    )
    metrics, predictions = evaluate_detector(
        student, datasets.val, config.eval, device, config.runtime.amp, progress
    )
    for name, value in metrics.items():
        writer.add_scalar(f"eval/{name}", value, stats.images)
    writer.close()
    run_dir.save_checkpoint(
        "student.pt", {"model": student.state_dict(), "kd": objective.state_dict()}
    )
    result = {
        **metrics,
        "kd_gflops": stats.kd_gflops_per_image,
        "student_train_gflops": flops.student_train_flops() / 1e9,
        "wall_time_s": time.perf_counter() - start,
        "train_time_s": stats.train_time_s,
        "method": selector.name if method is None else method,
        "levels": selector.name,
        "seed": seed,
        "selection_rates": stats.selection_rates,
        "kd_loss": config.distill.loss,
        "student_fingerprint": fingerprint,
    }
    run_dir.write_config(config)
    run_dir.write_predictions(predictions)
    run_dir.write_metrics(result)
    return result


def run_or_reuse_student(
    inputs: StudentRunInputs,
    selector: LevelSelector,
    seed: int,
    run_dir: RunDirectory,
    title: str,
    on_step: StepHook | None = None,
    method: str | None = None,
) -> dict:
    """The metrics of the student run in ``run_dir``: those it holds if it already finished with
    this fingerprint (config, seed, selector), else ``run_student``'s. Prints ``title`` and the
    outcome.
    """
    print(f"{title} -> {run_dir.path}", flush=True)
    fingerprint = student_fingerprint(inputs.config, seed, selector_key(selector))
    previous = finished_student_metrics(run_dir, fingerprint)
    if previous is not None:
        print(f"{title}: reusing the finished run", flush=True)
        if method is not None:
            previous["method"] = method
        return previous
    metrics = run_student(inputs, selector, seed, run_dir, on_step, method)
    # the title again: students in worker processes finish out of order
    print(
        f"{title}: AP = {100 * metrics['AP']:.1f}  kd_gflops = {metrics['kd_gflops']:.3f}",
        flush=True,
    )
    return metrics
