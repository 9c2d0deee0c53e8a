"""Loading detector checkpoints safely (``rlpkd.checkpoint_io.load_checkpoint``: weights only,
one-line errors for a missing, truncated or foreign file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlpkd.checkpoint_io import load_checkpoint
from rlpkd.config import Config
from rlpkd.errors import CheckpointError
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.factory import build_student, build_teacher

__all__ = ["load_detector_checkpoint", "detector_from_checkpoint_state"]


def detector_from_checkpoint_state(
    state: dict[str, Any], path: Path, config: Config, role: str, num_classes: int
) -> PyramidDetector:
    """The config's teacher or student architecture with the weights of a loaded checkpoint.

    Args:
        state: what ``load_checkpoint`` returned for ``path`` (holds ``'model'``).
        path: the checkpoint file, for the error message.
        config: the experiment whose ``teacher`` or ``student`` section gives the architecture.
        role: 'teacher' or 'student'.
        num_classes: the dataset's number of classes.

    Raises:
        CheckpointError: the weights do not fit the config's architecture.
    """
    model = (build_teacher if role == "teacher" else build_student)(config, num_classes)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path} does not match the config's {role} ({first_line})"
        ) from None
    return model


def load_detector_checkpoint(
    path: Path, config: Config, role: str, num_classes: int
) -> PyramidDetector:
    """The config's teacher or student architecture with the weights stored at ``path``.

    Raises:
        CheckpointError: the file is missing, truncated, foreign or made for another architecture.
    """
    state = load_checkpoint(path, f"{role} checkpoint", required_keys=("model",))
    return detector_from_checkpoint_state(state, Path(path), config, role, num_classes)
