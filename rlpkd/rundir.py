"""The run directory every script writes (DESIGN §11), with atomic writes.

Scripts validate their config and dataset before calling ``RunDirectory.prepare``, so a bad input
never touches an existing run; files are replaced atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from rlpkd.config import Config, config_to_dict

__all__ = ["RunDirectory", "atomic_write_text", "write_json", "read_json"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def write_json(path: Path, value: Any) -> None:
    """Atomically write JSON (NaN/inf become null)."""
    atomic_write_text(path, json.dumps(_json_safe(value), indent=2) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


class RunDirectory:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        """``<out>/checkpoints``."""
        return self.path / "checkpoints"

    @property
    def plots(self) -> Path:
        """``<out>/plots``."""
        return self.path / "plots"

    @property
    def tensorboard(self) -> Path:
        """``<out>/tensorboard``."""
        return self.path / "tensorboard"

    def prepare(self, config: Config) -> RunDirectory:
        """Create the layout and write the resolved ``config.yaml``."""
        for folder in (self.path, self.checkpoints, self.plots, self.tensorboard):
            folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.path / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False)
        )
        return self

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.json``."""
        write_json(self.path / "metrics.json", metrics)

    def write_predictions(self, predictions: list[dict[str, Any]]) -> None:
        """``predictions.json`` (COCO results format)."""
        atomic_write_text(self.path / "predictions.json", json.dumps(predictions))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """Atomically save ``checkpoints/<name>``."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.checkpoints / name
        fd, tmp = tempfile.mkstemp(dir=self.checkpoints, prefix=f".{name}.")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path
