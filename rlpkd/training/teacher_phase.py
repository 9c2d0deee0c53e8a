"""Phase 1: the teacher — trained once per (data, architecture, schedule, seed), then reused."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from rlpkd.checkpoint_io import load_checkpoint
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.fingerprint import file_digest, fingerprint
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.models.torchvision_fcos import freeze_mapped, load_torchvision_fcos
from rlpkd.rundir import RunDirectory
from rlpkd.runtime import seed_everything
from rlpkd.training.checkpoints import detector_from_checkpoint_state
from rlpkd.training.detector_training import train_detector

__all__ = [
    "teacher_fingerprint",
    "check_teacher_checkpoint",
    "load_teacher",
    "load_or_train_teacher",
    "given_or_run_teacher",
]


def teacher_fingerprint(config: Config) -> str:
    """A hash of everything that determines the trained teacher (with ``teacher.init``, the
    bytes of its file too)."""
    extra = {"seed": config.runtime.seed}
    if config.teacher.init:
        extra["init"] = file_digest(str(Path(config.teacher.init).expanduser()))
    return fingerprint(
        config, {"data": "data", "teacher": "teacher", "schedule": "teacher_schedule"}, extra
    )


TEACHER_CHECKPOINT = "teacher checkpoint"


def check_teacher_checkpoint(path: Path) -> None:
    """Read ``path`` if it exists, to fail on a truncated or foreign teacher before any write.

    Raises:
        CheckpointError: the file is truncated, foreign or holds no ``'model'``.
    """
    if Path(path).is_file():
        load_checkpoint(path, TEACHER_CHECKPOINT, required_keys=("model",))


def load_teacher(path: Path, config: Config, num_classes: int) -> tuple[PyramidDetector, dict]:
    """A frozen teacher from ``path`` and its stored metrics.

    Raises:
        CheckpointError: the file is missing, truncated, foreign or made for another teacher.
    """
    state = load_checkpoint(path, TEACHER_CHECKPOINT, required_keys=("model",))
    return _teacher_from_state(state, Path(path), config, num_classes)


def _teacher_from_state(
    state: dict, path: Path, config: Config, num_classes: int
) -> tuple[PyramidDetector, dict]:
    teacher = detector_from_checkpoint_state(state, path, config, "teacher", num_classes)
    return freeze_teacher(teacher), dict(state.get("metrics", {}))


def load_or_train_teacher(
    config: Config,
    datasets: DetectionDatasets,
    device: torch.device,
    run_dir: RunDirectory,
    progress: bool = True,
) -> tuple[PyramidDetector, dict]:
    """The teacher at ``<out>/checkpoints/teacher.pt``, trained first unless one exists for this
    config (same fingerprint). Returns the frozen teacher and its metrics (val AP, wall time).

    Raises:
        CheckpointError: an existing teacher.pt is truncated or foreign (delete it to retrain).
    """
    path = run_dir.checkpoints / "teacher.pt"
    fingerprint = teacher_fingerprint(config)
    if path.is_file():
        state = load_checkpoint(path, TEACHER_CHECKPOINT, required_keys=("model",))
        if state.get("fingerprint") == fingerprint:
            teacher, metrics = _teacher_from_state(state, path, config, datasets.num_classes)
            return teacher.to(device), metrics
    seed_everything(config.runtime.seed)
    teacher = build_teacher(config, datasets.num_classes)
    if config.teacher.init:
        _start_from_torchvision_fcos(teacher, config, datasets)
    writer = SummaryWriter(str(run_dir.tensorboard / "teacher"))
    start = time.perf_counter()
    train_detector(
        teacher,
        datasets.train,
        config.teacher_schedule,
        device,
        seed=config.runtime.seed,
        writer=writer,
        amp=config.runtime.amp,
        progress=progress,
    )
    train_time = time.perf_counter() - start
    metrics, predictions = evaluate_detector(
        teacher, datasets.val, config.eval, device, config.runtime.amp, progress
    )
    for name, value in metrics.items():
        writer.add_scalar(f"teacher/eval/{name}", value, 0)
    writer.close()
    metrics = {**metrics, "train_time_s": train_time}
    run_dir.save_checkpoint(
        "teacher.pt",
        {"model": teacher.state_dict(), "fingerprint": fingerprint, "metrics": metrics},
    )
    return freeze_teacher(teacher), metrics


def _start_from_torchvision_fcos(
    teacher: PyramidDetector, config: Config, datasets: DetectionDatasets
) -> None:
    """Copy ``teacher.init`` into ``teacher`` and freeze what it copied, so teacher_schedule
    trains only the rest; one line says what that is.

    Raises:
        CheckpointError: the file is missing or not torchvision's fcos_resnet50_fpn state dict.
    """
    train = datasets.train
    categories = list(zip(train.category_ids, train.class_names, strict=True))
    init = load_torchvision_fcos(teacher, config.teacher.init, categories)
    trainable = freeze_mapped(teacher, init)
    modules = dict.fromkeys(name.rsplit(".", 1)[0] for name in trainable)
    print(
        f"teacher.init: {len(init.mapped)} tensors from {config.teacher.init}, frozen; "
        f"teacher_schedule trains {', '.join(modules) or 'nothing'}",
        flush=True,
    )


def given_or_run_teacher(
    config: Config,
    datasets: DetectionDatasets,
    device: torch.device,
    run_dir: RunDirectory,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> tuple[PyramidDetector, Path]:
    """The frozen teacher at ``checkpoint`` (a script's ``--teacher``) on ``device``, or, without
    one, ``load_or_train_teacher``'s; returns it and the path of its checkpoint.

    Raises:
        CheckpointError: the checkpoint is missing, truncated, foreign or for another teacher.
    """
    if checkpoint is None:
        teacher, _ = load_or_train_teacher(config, datasets, device, run_dir, progress)
        return teacher, run_dir.checkpoints / "teacher.pt"
    teacher, _ = load_teacher(checkpoint, config, datasets.num_classes)
    return teacher.to(device), Path(checkpoint)
