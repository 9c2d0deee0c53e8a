"""Teacher and student detectors built from a config."""

from __future__ import annotations

from rlpkd.config import Config
from rlpkd.models.detector import PyramidDetector, build_detector

__all__ = ["build_teacher", "build_student"]


def build_teacher(config: Config, num_classes: int) -> PyramidDetector:
    """A fresh (untrained) teacher detector."""
    return build_detector(config.teacher, num_classes, tuple(config.data.level_thresholds))


def build_student(config: Config, num_classes: int) -> PyramidDetector:
    """A fresh student detector."""
    return build_detector(config.student, num_classes, tuple(config.data.level_thresholds))
