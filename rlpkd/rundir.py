"""The run directory every script writes (DESIGN §11), with atomic writes.

Scripts validate their config and inputs before calling ``RunDirectory.prepare``, so a bad input
never touches an existing run; files are replaced atomically, so a crash never leaves half a file;
``run_lock`` makes a second run on the same directory fail instead of interleaving with the first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from rlpkd.atomic_files import atomic_write_text
from rlpkd.checkpoint_io import save_checkpoint_atomic
from rlpkd.config import Config, config_to_dict
from rlpkd.errors import RunLockedError

__all__ = [
    "RunDirectory",
    "write_json",
    "read_json",
    "RunLock",
    "run_lock",
    "LOCK_NAME",
]

LOCK_NAME = ".lock"
"""The lock file of a run directory (``<out>/.lock``)."""


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

    def prepare(self, config: Config, write_config: bool = True) -> RunDirectory:
        """Create the layout and (unless ``write_config`` is False: a single run writes it beside
        its results, so a run that fails leaves the previous config.yaml with the previous
        results) write the resolved ``config.yaml``."""
        for folder in (self.path, self.checkpoints, self.plots, self.tensorboard):
            folder.mkdir(parents=True, exist_ok=True)
        if write_config:
            self.write_config(config)
        return self

    def write_config(self, config: Config) -> None:
        """``config.yaml``, the resolved config (left untouched when it already holds exactly this
        config, so a resumed run does not rewrite it)."""
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
        path = self.path / "config.yaml"
        if not (path.is_file() and path.read_text() == text):
            atomic_write_text(path, text)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.json``."""
        write_json(self.path / "metrics.json", metrics)

    def write_predictions(self, predictions: list[dict[str, Any]]) -> None:
        """``predictions.json`` (COCO results format)."""
        atomic_write_text(self.path / "predictions.json", json.dumps(predictions))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """Atomically save ``checkpoints/<name>``."""
        return save_checkpoint_atomic(self.checkpoints / name, state)


def _process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (Linux), else None: it tells a
    live holder from an unrelated process that reused a dead holder's pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid: int, start_ticks: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    if start_ticks is not None:
        current = _process_start_ticks(pid)
        if current is not None and current != start_ticks:
            return False  # the pid now belongs to another process
    return True


class RunLock:
    """One run per directory: ``<out>/.lock``, created atomically, holding pid, host and start time.

    ``acquire`` raises RunLockedError while a live process on this host (or any process on another
    host) holds the lock; a lock whose holder is gone (kill -9, a crash) is reported as a note on
    stderr and taken over. ``release`` removes the lock, and the directory too when the lock
    created it and it is still empty.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._created_dirs: list[Path] = []
        self._record: dict[str, Any] | None = None

    def _read_holder(self) -> dict[str, Any] | None:
        """The holder's record, or None when the file is gone, empty or unreadable."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _holder_alive(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:
            # Unparsable: a writer between create and write, or one killed there. Give a writer a
            # moment; an old unreadable lock is stale.
            try:
                age_s = time.time() - self.path.stat().st_mtime
            except OSError:
                return False
            return age_s < 5.0
        if holder.get("hostname") != socket.gethostname():
            return True  # cannot tell from here: assume it runs
        try:
            pid = int(holder.get("pid", 0))
        except (TypeError, ValueError):
            return False
        ticks = holder.get("start_ticks")
        return _pid_alive(pid, ticks if isinstance(ticks, int) else None)

    def acquire(self) -> RunLock:
        """Take the lock (creating ``out`` if needed); RunLockedError when a live run holds it."""
        missing = []
        for folder in (self.out, *self.out.parents):
            if folder.exists():
                break
            missing.append(folder)
        self.out.mkdir(parents=True, exist_ok=True)
        self._created_dirs = missing
        record = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "start_ticks": _process_start_ticks(os.getpid()),
        }
        try:
            for _ in range(3):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                try:
                    with os.fdopen(fd, "w") as handle:
                        json.dump(record, handle)
                        handle.flush()
                        os.fsync(handle.fileno())
                except BaseException:  # never leave a half-written lock behind
                    self.path.unlink(missing_ok=True)
                    raise
                self._record = record
                return self
            raise RunLockedError(f"run directory {self.out}: could not take the lock {self.path}")
        except BaseException:
            self._remove_created_dirs()
            raise

    def _take_over_if_stale(self) -> None:
        holder = self._read_holder()
        if self._holder_alive(holder):
            holder = holder or {}
            raise RunLockedError(
                f"run directory {self.out} is in use by another run (pid {holder.get('pid', '?')} "
                f"on {holder.get('hostname', '?')}, started {holder.get('started', '?')}); "
                f"wait for it to finish or choose another --out"
            )
        if self._read_holder() != holder:
            return  # another process took it over meanwhile: try again
        print(
            f"note: taking over the stale lock {self.path} of pid "
            f"{(holder or {}).get('pid', '?')} (no longer running)",
            file=sys.stderr,
        )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        """Remove the lock if this process still holds it; remove ``out`` if the lock created it
        and it is empty."""
        if self._record is not None and self._read_holder() == self._record:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._record = None
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        for folder in self._created_dirs:
            try:
                folder.rmdir()
            except OSError:  # not empty (the run wrote results) or already gone
                break
        self._created_dirs = []

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[RunLock]:
    """Hold ``<out>/.lock`` for the duration of the block (released on any exit; see RunLock)."""
    lock = RunLock(out).acquire()
    try:
        yield lock
    finally:
        lock.release()
