"""A cache of generated synthetic datasets, keyed by their generation parameters."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rlpkd.data.synthetic import GENERATOR_VERSION, generate_embedded_dataset
from rlpkd.errors import DataError

__all__ = ["embedded_dataset_dir", "ensure_embedded_dataset", "is_complete_dataset"]


def embedded_dataset_dir(
    root: Path, num_train: int, num_val: int, size: int, seed: int, regime: str
) -> Path:
    """The cache directory for these parameters, e.g. ``root/embedded-mixed-s128-n800-v200-seed0-g1``.

    The ``-gN`` suffix is the generator version, so a changed generator never reuses old data.
    """
    name = f"embedded-{regime}-s{size}-n{num_train}-v{num_val}-seed{seed}-g{GENERATOR_VERSION}"
    return Path(root) / name


def is_complete_dataset(dataset_dir: Path) -> bool:
    """True when both annotation files exist (the generator writes them last)."""
    annotations = Path(dataset_dir) / "annotations"
    return (annotations / "train.json").is_file() and (annotations / "val.json").is_file()


def ensure_embedded_dataset(
    root: Path,
    num_train: int,
    num_val: int,
    size: int,
    seed: int,
    regime: str,
    progress: bool = True,
) -> Path:
    """The cached dataset directory, generated on first use.

    Generation goes to a temporary sibling directory that is renamed into place when complete, so
    an interrupted run never leaves something that looks finished, and concurrent trials asking
    for the same dataset each get a complete copy (the first rename wins).

    Raises:
        ConfigError: invalid generation parameters.
        DataError: the cache directory exists but is incomplete and was not made by this code.
    """
    final_dir = embedded_dataset_dir(root, num_train, num_val, size, seed, regime)
    if is_complete_dataset(final_dir):
        return final_dir
    if final_dir.exists():
        raise DataError(
            f"dataset cache {final_dir} is incomplete (no annotations/train.json and val.json); "
            "delete it and run again"
        )
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-", dir=final_dir.parent))
    try:
        generate_embedded_dataset(
            tmp_dir, num_train, num_val, size, seed, regime, progress=progress
        )
        try:
            tmp_dir.rename(final_dir)
        except OSError:
            if not is_complete_dataset(final_dir):
                raise
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir
