"""Atomic file replacement: a file is either its old content or its whole new content, never half.

Every writer (text, JSON, checkpoints, plots) writes a temporary file beside the target and renames
it over the target; a crash or an exception in between leaves the target as it was and removes
the temporary file. Parallel readers (env runners reading the snapshot pool, the report reading a
trial's metrics) therefore never see a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Replace ``path`` with what ``write`` puts in a temporary file beside it; returns ``path``.

    Args:
        path: the target; its folder is created if missing.
        write: called with the temporary file's path (an empty file named
            ``.<name>.<random>``); it writes the whole new content there, e.g.
            ``lambda tmp: torch.save(state, tmp)``.

    The result has the permissions a plain ``open(path, "w")`` gives (0666 less the umask), not
    ``mkstemp``'s private 0600, so run directories stay readable to whoever could read them before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
