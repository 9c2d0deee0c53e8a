"""Phase 2's PPO checkpoints: RLlib's algorithm checkpoint per iteration, a progress record that
points at the latest one (atomically) and carries the history and the inputs' fingerprint, and
reading them back with one-line errors (``save_checkpoint``, ``latest_checkpoint``,
``restore_checkpoint``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm

from rlpkd.errors import CheckpointError
from rlpkd.rundir import read_json, write_json

__all__ = [
    "PROGRESS_FILE",
    "start_over_hint",
    "latest_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
]

PROGRESS_FILE = "progress.json"


def start_over_hint(checkpoint_dir: Path) -> str:
    """What to do when a PPO checkpoint cannot be used: delete the folder."""
    return f"delete {checkpoint_dir} to start Phase 2 over"


def latest_checkpoint(checkpoint_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The latest algorithm checkpoint in ``checkpoint_dir`` and its progress record, if any.

    The record holds ``iteration``, ``checkpoint`` (the folder's name), ``history`` and
    ``fingerprint`` (of the inputs the policy was trained from; '' when written without one).

    Raises:
        CheckpointError: progress.json is unreadable or names a checkpoint that is not there.
    """
    checkpoint_dir = Path(checkpoint_dir)
    progress_path = checkpoint_dir / PROGRESS_FILE
    if not progress_path.is_file():
        return None
    try:
        progress = read_json(progress_path)
        path = checkpoint_dir / str(progress["checkpoint"])
        int(progress["iteration"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"cannot read the PPO progress record {progress_path} (truncated or foreign: "
            f"{type(error).__name__} {error}); {start_over_hint(checkpoint_dir)}"
        ) from None
    if not path.is_dir():
        raise CheckpointError(
            f"{progress_path} names the missing checkpoint {path}; {start_over_hint(checkpoint_dir)}"
        )
    progress.setdefault("fingerprint", "")
    return path, progress


def restore_checkpoint(algo: Algorithm, path: Path, checkpoint_dir: Path) -> None:
    """``algo.restore_from_path(path)`` (which also syncs the restored weights to every env
    runner); a truncated or corrupt checkpoint is a CheckpointError naming ``path`` and saying
    to delete ``checkpoint_dir``."""
    try:
        algo.restore_from_path(str(Path(path).resolve()))
    except Exception as error:  # RLlib raises what unpickling or file access raised
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"cannot restore the PPO checkpoint {path} (truncated or corrupt: "
            f"{type(error).__name__}: {first_line}); {start_over_hint(checkpoint_dir)}"
        ) from None


def save_checkpoint(
    algo: Algorithm, checkpoint_dir: Path, history: list[dict[str, Any]], fingerprint: str = ""
) -> None:
    """Save ``iteration_NNNN/`` (RLlib's ``Algorithm.save_to_path``), then point progress.json
    at it, then drop older checkpoints.

    The pointer and the pruning are ours because RLlib has neither for an algorithm trained by
    its own loop: ``save_to_path`` (and ``Trainable.save``) write one folder and leave keeping
    or deleting earlier ones to the caller; Tune's ``CheckpointConfig(num_to_keep=...)`` keeps
    only checkpoints a Tune trial reports, in Tune's storage (not ``checkpoint_dir``, and a
    single run has no Tune); and saving over one fixed folder is not atomic, so a crash during
    the save would leave a mix of two iterations. progress.json, written atomically after the
    save, switches resume to the new checkpoint in one rename and carries what RLlib's
    checkpoint does not: the history and the fingerprint of the policy's inputs.
    """
    name = f"iteration_{algo.iteration:04d}"
    algo.save_to_path(str((checkpoint_dir / name).resolve()))
    write_json(
        checkpoint_dir / PROGRESS_FILE,
        {
            "iteration": algo.iteration,
            "checkpoint": name,
            "history": history,
            "fingerprint": fingerprint,
        },
    )
    for old in checkpoint_dir.glob("iteration_*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
