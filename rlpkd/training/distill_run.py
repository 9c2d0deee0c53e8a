"""A student trained with per-sample level masks from a LevelSelector, then evaluated."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlpkd.checkpoint_io import load_checkpoint, save_checkpoint_atomic
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.objective import DistillationObjective, ObjectiveTerms
from rlpkd.errors import CheckpointError
from rlpkd.levels import LEVELS, NUM_LEVELS, masks_to_subsets
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.factory import build_student
from rlpkd.models.teacher_cache import TeacherFeatureCache
from rlpkd.runtime import seed_everything
from rlpkd.training.kd_step import (
    detached_features,
    detached_output,
    kd_training_step,
    student_forward,
)
from rlpkd.training.level_selection import (
    FeatureObservingSelector,
    LevelSelector,
    OutputObservingSelector,
    StatefulSelector,
    StepObservingSelector,
    StudentObservingSelector,
    TrainingObservingSelector,
)
from rlpkd.training.optim import build_optimizer, warmup_cosine_schedule

__all__ = [
    "DistillationStats",
    "StepHook",
    "StudentTraining",
    "new_student_training",
    "student_phase_name",
    "distill_student",
]

StepHook = Callable[[int, DetectionBatch, torch.Tensor, ObjectiveTerms], None]
_RESUME_KEYS = (
    "student",
    "objective",
    "optimizer",
    "scheduler",
    "loader_rng",
    "torch_rng",
    "selector",
    "stats",
    "step",
    "epoch",
)


@dataclass
class DistillationStats:
    """What a distillation run did, for the metrics file."""

    images: int = 0
    kd_flops: float = 0.0
    level_counts: list[int] = field(default_factory=lambda: [0] * NUM_LEVELS)
    train_time_s: float = 0.0

    @property
    def kd_gflops_per_image(self) -> float:
        """Counted teacher + KD GFLOPs per training image."""
        return self.kd_flops / max(self.images, 1) / 1e9

    @property
    def selection_rates(self) -> dict[str, float]:
        """Fraction of training samples that distilled each level."""
        return {
            level: count / max(self.images, 1)
            for level, count in zip(LEVELS, self.level_counts, strict=True)
        }


@dataclass
class StudentTraining:
    """A fresh student and what trains it: the KD objective (adapters, normalisation, GradNorm),
    the optimiser over both and the warm-up + cosine LR schedule."""

    student: PyramidDetector
    objective: DistillationObjective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def new_student_training(
    config: Config, num_classes: int, total_steps: int, device: torch.device
) -> StudentTraining:
    """Build a student, its objective, optimiser and schedule from ``config`` (draws the student's
    and the adapters' initial weights from torch's global RNG, in that order)."""
    schedule = config.student_schedule
    student = build_student(config, num_classes).to(device)
    objective = DistillationObjective(
        config.distill, config.student.fpn_channels, config.teacher.fpn_channels, num_classes
    ).to(device)
    optimizer = build_optimizer(
        [*student.parameters(), *objective.trainable_parameters()], schedule
    )
    scheduler = warmup_cosine_schedule(optimizer, total_steps, schedule.warmup_steps)
    return StudentTraining(student, objective, optimizer, scheduler)


def student_phase_name(selector: LevelSelector, seed: int) -> str:
    """How a student run is named in a DivergenceError: 'student P2,P3 seed 0'."""
    return f"student {selector.name} seed {seed}"


def distill_student(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    selector: LevelSelector,
    seed: int,
    device: torch.device,
    subset_kd_flops: torch.Tensor,
    writer: SummaryWriter | None = None,
    progress: bool = True,
    on_step: StepHook | None = None,
    checkpoint_path: Path | None = None,
    phase: str | None = None,
    teacher_cache: TeacherFeatureCache | None = None,
) -> tuple[PyramidDetector, DistillationObjective, DistillationStats]:
    """Train a fresh student for ``config.student_schedule`` with KD at the selector's levels.

    Args:
        subset_kd_flops: [16] kd FLOPs per image of each level subset, by subset index
            (``FlopsModel.subset_kd_flops()``); counted per sample as the run goes.
        on_step: called after every update with (step, batch, mask, terms) — e.g. a decision
            log, or a policy selector keeping its running KD gap current.
        checkpoint_path: saved at the end of every epoch; if it exists at the start, the run
            resumes after its last finished epoch (same data order, RNG and optimiser state).
            A file that cannot be read or does not fit this run is a CheckpointError naming it.
        phase: names the run in a DivergenceError (default ``student_phase_name``).
        teacher_cache: a memo of ``teacher``'s pyramid shared by the runs that use it
            (``runtime.teacher_cache_gb``); None runs the lazy teacher every step.

    Raises:
        DivergenceError: a step's loss or gradient is not finite. The run stops before that
            step's update; the resume file keeps the last finished epoch, nothing else is written.
        CheckpointError: the resume file is truncated, foreign or from another architecture.
    """
    seed_everything(seed)
    schedule = config.student_schedule
    loader = build_dataloader(
        datasets.train, schedule.batch_size, shuffle=True, seed=seed, drop_last=True
    )
    total_steps = schedule.epochs * len(loader)
    training = new_student_training(config, datasets.num_classes, total_steps, device)
    student, objective = training.student, training.objective
    optimizer, scheduler = training.optimizer, training.scheduler
    if isinstance(selector, StudentObservingSelector):
        selector.set_student(student)  # a policy observes the student's own pyramid
    if isinstance(selector, TrainingObservingSelector):
        selector.set_training(student, teacher, objective, optimizer)  # value-greedy probes
    stats = DistillationStats()
    amp = config.runtime.amp
    start = time.perf_counter()
    step, first_epoch = 0, 0
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, "student resume file", _RESUME_KEYS)
        try:
            student.load_state_dict(state["student"])
            objective.load_state_dict(state["objective"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            loader.generator.set_state(state["loader_rng"])
            torch.set_rng_state(state["torch_rng"])
            if isinstance(selector, StatefulSelector):
                selector.load_state_dict(state["selector"])
            stats = DistillationStats(**state["stats"])
            step, first_epoch = int(state["step"]), int(state["epoch"]) + 1
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(
                f"student resume file {checkpoint_path} does not fit this run ({first_line}); "
                "delete it to train the student from the start"
            ) from None
    phase = student_phase_name(selector, seed) if phase is None else phase
    bar = tqdm(
        total=total_steps, initial=step, desc=f"student {selector.name}", disable=not progress
    )
    for epoch in range(first_epoch, schedule.epochs):
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            progress_now = step / max(total_steps, 1)
            output = None
            if isinstance(selector, OutputObservingSelector):
                output = student_forward(student, batch, amp)
                mask = selector.select_from_output(batch, detached_output(output), progress_now)
                mask = mask.cpu()
            elif isinstance(selector, FeatureObservingSelector):
                # the policy reads the step's own student forward: no second forward
                output = student_forward(student, batch, amp)
                features = detached_features(output)
                mask = selector.select_from_features(batch, features, progress_now).cpu()
            else:
                mask = selector.select(batch, progress_now).cpu()
            terms = kd_training_step(
                student,
                teacher,
                objective,
                optimizer,
                batch,
                mask,
                schedule.grad_clip,
                amp,
                phase=phase,
                step=step + 1,
                output=output,
                teacher_cache=teacher_cache,
            )
            scheduler.step()
            step += 1
            stats.kd_flops += float(subset_kd_flops[masks_to_subsets(mask)].sum())
            stats.images += len(batch)
            for i, count in enumerate(mask.sum(dim=0).tolist()):
                stats.level_counts[i] += int(count)
            if writer is not None and step % 10 == 0:
                writer.add_scalar("losses/detection", float(terms.detection), step)
                kd_means = terms.kd_raw.sum(0) / mask.sum(0).clamp(min=1)
                for i, level in enumerate(LEVELS):
                    writer.add_scalar(f"losses/kd_{level}", float(kd_means[i]), step)
                    writer.add_scalar(
                        f"gradnorm/weight_{level}", float(terms.level_weights[i + 1]), step
                    )
                writer.add_scalar("gradnorm/weight_detection", float(terms.level_weights[0]), step)
                writer.add_scalar("charts/lr", scheduler.get_last_lr()[0], step)
            if isinstance(selector, StepObservingSelector):
                selector.observe_step(batch, mask, terms)
            if on_step is not None:
                on_step(step, batch, mask, terms)
            bar.update(1)
            bar.set_postfix(det=f"{float(terms.detection):.3f}")
        if checkpoint_path is not None:
            stats.train_time_s += time.perf_counter() - start
            start = time.perf_counter()
            save_checkpoint_atomic(
                checkpoint_path,
                {
                    "student": student.state_dict(),
                    "objective": objective.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "loader_rng": loader.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "selector": (
                        selector.state_dict() if isinstance(selector, StatefulSelector) else {}
                    ),
                    "stats": asdict(stats),
                    "step": step,
                    "epoch": epoch,
                },
            )
    bar.close()
    stats.train_time_s += time.perf_counter() - start
    return student, objective, stats
