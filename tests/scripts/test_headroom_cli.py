"""scripts/headroom.py: a bad option is one ``error:`` line (exit 2) and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.dir_snapshot import directory_snapshot

pytestmark = pytest.mark.slow  # runs a script


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--subsets", "P2", "P9"], "--subsets: unknown pyramid level(s) P9"),
        (["--value-batches", "0"], "--value-batches 0"),
        (["--teacher", "missing.pt"], "--teacher checkpoint not found"),
        (["--set", "data.source=coco"], "data.train_images"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(args, needle, tiny_data_root, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.json").write_text('{"AP": 0.5}\n')
    before = directory_snapshot(out)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "headroom.py"),
            "--debug",
            "--set",
            f"data.root={tiny_data_root}",
            "--out",
            str(out),
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert directory_snapshot(out) == before
