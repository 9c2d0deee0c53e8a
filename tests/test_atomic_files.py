"""Atomic replacement: the target holds its old or its whole new content, and no temporary is left."""

from __future__ import annotations

import pytest
import torch

from rlpkd.atomic_files import atomic_write, atomic_write_text
from rlpkd.checkpoint_io import load_checkpoint, save_checkpoint_atomic


def test_text_is_written_and_replaced_in_a_new_folder(tmp_path):
    path = tmp_path / "new" / "report.md"
    assert atomic_write_text(path, "first\n") == path
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_writer_gets_a_hidden_sibling_and_binary_writers_work(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        torch.save({"x": torch.arange(3)}, tmp)

    path = atomic_write(tmp_path / "state.pt", write)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".state.pt.")
    assert not seen[0].exists()
    assert torch.equal(load_checkpoint(path, "state")["x"], torch.arange(3))
    save_checkpoint_atomic(path, {"x": torch.zeros(2)})
    assert torch.equal(load_checkpoint(path, "state")["x"], torch.zeros(2))


def test_the_written_file_has_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
