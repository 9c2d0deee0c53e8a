"""Loading detector checkpoints safely (``torch.load(weights_only=True)``)."""

from __future__ import annotations

from pathlib import Path

import torch

from rlpkd.config import Config
from rlpkd.errors import UserError
from rlpkd.models.detector import PyramidDetector
from rlpkd.training.model_factory import build_student, build_teacher

__all__ = ["load_detector_checkpoint"]


def load_detector_checkpoint(
    path: Path, config: Config, role: str, num_classes: int
) -> PyramidDetector:
    """The config's teacher or student architecture with the weights stored at ``path``."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    model = (build_teacher if role == "teacher" else build_student)(config, num_classes)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise UserError(
            f"checkpoint {path} does not match the config's {role} ({str(error).splitlines()[0]})"
        ) from None
    return model
