"""Teacher and student detectors built from a config."""

from __future__ import annotations

from rlpkd.config import Config, ModelConfig
from rlpkd.models.detector import DetectorSpec, PyramidDetector, build_detector

__all__ = ["detector_spec", "build_teacher", "build_student"]


def detector_spec(model: ModelConfig) -> DetectorSpec:
    """The architecture a ModelConfig describes."""
    return DetectorSpec(
        depth=model.depth,
        width=model.width,
        fpn_channels=model.fpn_channels,
        head_convs=model.head_convs,
        pretrained=model.pretrained,
    )


def build_teacher(config: Config, num_classes: int) -> PyramidDetector:
    """A fresh (untrained) teacher detector."""
    return build_detector(
        detector_spec(config.teacher), num_classes, tuple(config.data.level_thresholds)
    )


def build_student(config: Config, num_classes: int) -> PyramidDetector:
    """A fresh student detector."""
    return build_detector(
        detector_spec(config.student), num_classes, tuple(config.data.level_thresholds)
    )
