"""The level-value validation on an experiment's config: a warmed-up student, a held-out batch.

Builds the data, teacher and a fresh student of ``config`` and runs
``rlpkd.training.level_value_validation.validate_level_values`` (``scripts/validate_level_value.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import build_datasets, heldout_split
from rlpkd.data.coco import build_dataloader, collate_detection
from rlpkd.errors import ConfigError
from rlpkd.levels import NUM_LEVELS
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.runtime import seed_everything
from rlpkd.training.distill_run import new_student_training
from rlpkd.training.kd_step import kd_training_step
from rlpkd.training.level_value_validation import LevelValueValidation, validate_level_values
from rlpkd.training.teacher_phase import load_teacher

__all__ = ["validate_on_config"]


def validate_on_config(
    config: Config,
    teacher_checkpoint: Path | None = None,
    seed: int = 0,
    warmup_steps: int = 10,
    num_masks: int = 32,
    heldout_size: int = 16,
    device: torch.device | str = "cpu",
) -> LevelValueValidation:
    """``validate_level_values`` at a student trained ``warmup_steps`` steps on ``config``'s data.

    The training split is split by ``heldout_split(…, config.search.holdout_fraction, seed)``; V is
    the first ``heldout_size`` held-out images (never val). A fresh student (``config``'s student,
    objective and optimiser, seeded) distils every level for ``warmup_steps`` steps, so the
    optimiser has state; the validation runs on the next batch. The learning rate is held at
    ``student_schedule.lr`` (the schedule's peak). The teacher is loaded from ``teacher_checkpoint``
    (a ``teacher.pt`` of a run with this config), else an untrained one of ``config``'s
    architecture (the prediction is about the student's step, whatever the teacher).
    """

    device = torch.device(device)
    seed_everything(seed)
    datasets = build_datasets(config.data, progress=False)
    split = heldout_split(datasets, config.search.holdout_fraction, seed)
    heldout = collate_detection(
        [split.val[i] for i in range(min(heldout_size, len(split.val)))]
    ).to(device)
    if teacher_checkpoint is None:
        teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    else:
        teacher, _ = load_teacher(teacher_checkpoint, config, datasets.num_classes)
    teacher = teacher.to(device)
    schedule = config.student_schedule
    loader = build_dataloader(
        split.train, schedule.batch_size, shuffle=True, seed=seed, drop_last=True
    )
    if len(loader) == 0:
        raise ConfigError(
            f"{len(split.train)} search-train images make no batch of "
            f"student_schedule.batch_size={schedule.batch_size}; lower it or add images"
        )
    training = new_student_training(
        config, datasets.num_classes, schedule.epochs * len(loader), device
    )
    for group in training.optimizer.param_groups:
        group["lr"] = schedule.lr  # the peak rate, not a warm-up or decay stage of the schedule

    def batches() -> Iterator[DetectionBatch]:
        while True:
            yield from loader

    stream = batches()
    for _ in range(warmup_steps):
        batch = next(stream).to(device)
        mask = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool, device=device)
        kd_training_step(
            training.student,
            teacher,
            training.objective,
            training.optimizer,
            batch,
            mask,
            schedule.grad_clip,
        )
    return validate_level_values(
        training.distillation_state(teacher),
        next(stream).to(device),
        heldout,
        num_masks=num_masks,
        seed=seed,
        grad_clip=schedule.grad_clip,
    )
