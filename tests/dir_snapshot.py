"""Test helper: a byte-for-byte fingerprint of a directory tree, to prove a failing run touched
nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["directory_snapshot"]


def directory_snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256 of the bytes, mtime_ns)} of every file under ``root``; folders
    appear with an empty hash, so a new empty folder is a change too."""
    snapshot: dict[str, tuple[str, int]] = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            snapshot[rel + "/"] = ("", 0)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            snapshot[rel] = (digest, path.stat().st_mtime_ns)
    return snapshot
