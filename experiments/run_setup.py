"""The set-up every driver starts with: the runtime, the data (validated before anything is
written), the run directory and the teacher, giving the inputs a student run needs.

``open_run`` does what must come before any write; ``prepare_run`` writes ``config.yaml`` and
trains (or reuses) the teacher; ``student_inputs`` bundles data, teacher, FLOPs model and device
for ``rlpkd.training.student_phase``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.errors import DataError
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.models.detector import PyramidDetector
from rlpkd.rundir import RunDirectory
from rlpkd.runtime import configure_runtime
from rlpkd.training.student_phase import StudentRunInputs
from rlpkd.training.teacher_phase import (
    check_teacher_checkpoint,
    given_or_run_teacher,
    load_or_train_teacher,
)

__all__ = [
    "OpenedRun",
    "check_trainable",
    "open_run",
    "open_run_with_teacher",
    "prepare_run",
    "student_inputs",
]


@dataclass(frozen=True)
class OpenedRun:
    """A driver's device, datasets and run directory (named, not yet written)."""

    device: torch.device
    datasets: DetectionDatasets
    run_dir: RunDirectory


def check_trainable(config: Config, datasets: DetectionDatasets) -> None:
    """Raise a one-line DataError when the training split cannot fill one batch of a schedule
    (every epoch would drop its only, partial batch: the run would train on nothing and report
    AP 0) or the validation split is empty."""
    images = len(datasets.train)
    for name in ("teacher_schedule", "student_schedule"):
        batch = getattr(config, name).batch_size
        if images < batch:
            raise DataError(
                f"the training split has {images} images, fewer than {name}.batch_size {batch}: "
                f"nothing would train; use more images (data.num_train) or a smaller batch"
            )
    if len(datasets.val) == 0:
        raise DataError("the validation split has no images: nothing to evaluate on")


def open_run(config: Config, progress: bool | None = None) -> OpenedRun:
    """Configure the runtime (device, threads, seeds), build the datasets, which validates them
    before anything is written (``check_trainable`` too), and name the run directory
    ``runtime.out``."""
    progress = config.runtime.progress if progress is None else progress
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, progress)
    check_trainable(config, datasets)
    return OpenedRun(device, datasets, RunDirectory(config.runtime.out))


def open_run_with_teacher(
    config: Config, teacher_checkpoint: Path | None = None
) -> tuple[OpenedRun, PyramidDetector, Path]:
    """``open_run``, ``config.yaml`` written, and the teacher ``given_or_run_teacher`` gives (the
    one at ``teacher_checkpoint``, else the run's own, trained or reused); returns the run, the
    teacher and the path of its checkpoint."""
    progress = config.runtime.progress
    opened = open_run(config, progress)
    opened.run_dir.prepare(config)
    teacher, checkpoint = given_or_run_teacher(
        config, opened.datasets, opened.device, opened.run_dir, teacher_checkpoint, progress
    )
    return opened, teacher, checkpoint


def prepare_run(
    config: Config, opened: OpenedRun, progress: bool | None = None
) -> tuple[PyramidDetector, dict[str, float]]:
    """Check an earlier run's teacher checkpoint (a truncated one fails before any write), write
    ``config.yaml`` and train or reuse the teacher; returns it and its metrics."""
    progress = config.runtime.progress if progress is None else progress
    run_dir = opened.run_dir
    check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")
    run_dir.prepare(config)
    return load_or_train_teacher(config, opened.datasets, opened.device, run_dir, progress)


def student_inputs(config: Config, opened: OpenedRun, teacher: PyramidDetector) -> StudentRunInputs:
    """What every student run of this driver needs: config, data, teacher, FLOPs model, device."""
    flops = flops_model_from_config(config, opened.datasets.num_classes)
    return StudentRunInputs(config, opened.datasets, teacher, flops, opened.device)
