"""Every checkpoint load goes through here: ``torch.load(weights_only=True)``, one-line errors.

A truncated, empty or foreign file (not a torch checkpoint, or one that needs arbitrary pickled
objects) becomes a :class:`~rlpkd.errors.CheckpointError` naming the file and what it should be,
never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rlpkd.atomic_files import atomic_write
from rlpkd.errors import CheckpointError

__all__ = ["load_checkpoint", "save_checkpoint_atomic"]


def load_checkpoint(
    path: str | Path,
    what: str,
    required_keys: Iterable[str] = (),
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The dict stored at ``path`` by ``torch.save``, loaded with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        what: what the file should be, for the error message (e.g. 'teacher checkpoint').
        required_keys: keys the dict must hold; a missing one is a CheckpointError.
        map_location: where tensors are loaded.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, not a dict, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, empty, foreign or unsafe pickle
        raise CheckpointError(
            f"cannot read {what} {path}: {_reason(error)}; delete it to recompute it"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} holds a {type(state).__name__}, not a checkpoint")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{what} {path} lacks {', '.join(repr(k) for k in missing)}; "
            "it was written by something else"
        )
    return state


def _reason(error: Exception) -> str:
    """A short, readable reason for a failed ``torch.load``."""
    text = str(error).strip()
    if isinstance(error, EOFError) or "central directory" in text or "EOF" in text:
        return "truncated (an interrupted write?)"
    if "Unsupported global" in text:
        return "it holds objects other than tensors and plain data (unsafe to load)"
    if (
        isinstance(error, UnicodeDecodeError)
        or "Unsupported operand" in text
        or "invalid load key" in text
        or text.isdigit()
    ):
        return "not a torch checkpoint"
    return "unreadable: " + (text.splitlines() or [type(error).__name__])[0][:120]


def save_checkpoint_atomic(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half a file."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))
