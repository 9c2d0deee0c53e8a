"""A student trained with per-sample level masks from a LevelSelector, then evaluated."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlpkd.checkpoint_io import load_checkpoint, save_checkpoint_atomic
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.objective import DistillationObjective, DistillationState, ObjectiveTerms
from rlpkd.errors import CheckpointError
from rlpkd.levels import LEVELS, NUM_LEVELS, masks_to_subsets
from rlpkd.models.detector import DetectorOutput, PyramidDetector
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

    def distillation_state(self, teacher: PyramidDetector) -> DistillationState:
        """This student, objective and optimiser distilled from ``teacher``."""
        return DistillationState(self.student, teacher, self.objective, self.optimizer)


@dataclass(frozen=True)
class _StepContext:
    """What every training step of one run reads besides the batch, fixed for the run."""

    teacher: PyramidDetector
    selector: LevelSelector
    device: torch.device
    amp: bool
    grad_clip: float
    phase: str
    subset_kd_flops: torch.Tensor
    writer: SummaryWriter | None
    on_step: StepHook | None
    teacher_cache: TeacherFeatureCache | None


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
    _connect_selector(selector, training, teacher)
    stats = DistillationStats()
    start = time.perf_counter()
    step, first_epoch = 0, 0
    if checkpoint_path is not None and checkpoint_path.is_file():
        stats, step, first_epoch = _resume(checkpoint_path, training, loader, selector)
    run = _StepContext(
        teacher=teacher,
        selector=selector,
        device=device,
        amp=config.runtime.amp,
        grad_clip=schedule.grad_clip,
        phase=student_phase_name(selector, seed) if phase is None else phase,
        subset_kd_flops=subset_kd_flops,
        writer=writer,
        on_step=on_step,
        teacher_cache=teacher_cache,
    )
    bar = tqdm(
        total=total_steps, initial=step, desc=f"student {selector.name}", disable=not progress
    )
    for epoch in range(first_epoch, schedule.epochs):
        step = _train_epoch(run, training, loader, stats, step, total_steps, bar)
        if checkpoint_path is not None:
            stats.train_time_s += time.perf_counter() - start
            start = time.perf_counter()
            _save_resume_file(checkpoint_path, training, loader, selector, stats, step, epoch)
    bar.close()
    stats.train_time_s += time.perf_counter() - start
    return training.student, training.objective, stats


def _connect_selector(
    selector: LevelSelector, training: StudentTraining, teacher: PyramidDetector
) -> None:
    """Give a selector that observes the student (or probes training) what it observes."""
    if isinstance(selector, StudentObservingSelector):
        selector.set_student(training.student)  # a policy observes the student's own pyramid
    if isinstance(selector, TrainingObservingSelector):
        # value-greedy probes
        selector.set_training(training.distillation_state(teacher))


def _resume(
    checkpoint_path: Path,
    training: StudentTraining,
    loader: DataLoader,
    selector: LevelSelector,
) -> tuple[DistillationStats, int, int]:
    """Restore a run from its resume file; returns its stats, step and the epoch to start at.

    Raises:
        CheckpointError: the file cannot be read or does not fit this run.
    """
    state = load_checkpoint(checkpoint_path, "student resume file", _RESUME_KEYS)
    try:
        training.student.load_state_dict(state["student"])
        training.objective.load_state_dict(state["objective"])
        training.optimizer.load_state_dict(state["optimizer"])
        training.scheduler.load_state_dict(state["scheduler"])
        loader.generator.set_state(state["loader_rng"])
        torch.set_rng_state(state["torch_rng"])
        if isinstance(selector, StatefulSelector):
            selector.load_state_dict(state["selector"])
        stats = DistillationStats(**state["stats"])
        return stats, int(state["step"]), int(state["epoch"]) + 1
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"student resume file {checkpoint_path} does not fit this run ({first_line}); "
            "delete it to train the student from the start"
        ) from None


def _select_mask(
    run: _StepContext, student: PyramidDetector, batch: DetectionBatch, progress: float
) -> tuple[torch.Tensor, DetectorOutput | None]:
    """The step's [B, 4] level mask (on the CPU) and, when the selector read it, the student's
    forward for the update to reuse."""
    selector = run.selector
    if isinstance(selector, OutputObservingSelector):
        output = student_forward(student, batch, run.amp)
        mask = selector.select_from_output(batch, detached_output(output), progress)
        return mask.cpu(), output
    if isinstance(selector, FeatureObservingSelector):
        # the policy reads the step's own student forward: no second forward
        output = student_forward(student, batch, run.amp)
        features = detached_features(output)
        return selector.select_from_features(batch, features, progress).cpu(), output
    return selector.select(batch, progress).cpu(), None


def _train_epoch(
    run: _StepContext,
    training: StudentTraining,
    loader: DataLoader,
    stats: DistillationStats,
    step: int,
    total_steps: int,
    bar: tqdm,
) -> int:
    """One pass over ``loader``: select, update, count and log each batch; returns the step."""
    for batch in loader:
        batch = batch.to(run.device, non_blocking=True)
        mask, output = _select_mask(run, training.student, batch, step / max(total_steps, 1))
        terms = kd_training_step(
            training.student,
            run.teacher,
            training.objective,
            training.optimizer,
            batch,
            mask,
            run.grad_clip,
            run.amp,
            phase=run.phase,
            step=step + 1,
            output=output,
            teacher_cache=run.teacher_cache,
        )
        training.scheduler.step()
        step += 1
        stats.kd_flops += float(run.subset_kd_flops[masks_to_subsets(mask)].sum())
        stats.images += len(batch)
        for i, count in enumerate(mask.sum(dim=0).tolist()):
            stats.level_counts[i] += int(count)
        if run.writer is not None and step % 10 == 0:
            _log_step(run.writer, step, mask, terms, training.scheduler)
        if isinstance(run.selector, StepObservingSelector):
            run.selector.observe_step(batch, mask, terms)
        if run.on_step is not None:
            run.on_step(step, batch, mask, terms)
        bar.update(1)
        bar.set_postfix(det=f"{float(terms.detection):.3f}")
    return step


def _log_step(
    writer: SummaryWriter,
    step: int,
    mask: torch.Tensor,
    terms: ObjectiveTerms,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Write the step's losses, GradNorm weights and learning rate to TensorBoard."""
    writer.add_scalar("losses/detection", float(terms.detection), step)
    kd_means = terms.kd_raw.sum(0) / mask.sum(0).clamp(min=1)
    for i, level in enumerate(LEVELS):
        writer.add_scalar(f"losses/kd_{level}", float(kd_means[i]), step)
        writer.add_scalar(f"gradnorm/weight_{level}", float(terms.level_weights[i + 1]), step)
    writer.add_scalar("gradnorm/weight_detection", float(terms.level_weights[0]), step)
    writer.add_scalar("charts/lr", scheduler.get_last_lr()[0], step)


def _save_resume_file(
    checkpoint_path: Path,
    training: StudentTraining,
    loader: DataLoader,
    selector: LevelSelector,
    stats: DistillationStats,
    step: int,
    epoch: int,
) -> None:
    """Atomically write everything ``_resume`` needs to go on after ``epoch``."""
    save_checkpoint_atomic(
        checkpoint_path,
        {
            "student": training.student.state_dict(),
            "objective": training.objective.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "scheduler": training.scheduler.state_dict(),
            "loader_rng": loader.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "selector": selector.state_dict() if isinstance(selector, StatefulSelector) else {},
            "stats": asdict(stats),
            "step": step,
            "epoch": epoch,
        },
    )
