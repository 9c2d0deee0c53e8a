"""scripts/headroom.py: a bad option is one ``error:`` line (exit 2) and writes nothing."""

from __future__ import annotations

import pytest

from tests.conftest import one_error_line, run_script
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
    common = ["--debug", "--set", f"data.root={tiny_data_root}", "--out", str(out)]
    result = run_script("scripts/headroom.py", *common, *args, cwd=tmp_path, timeout_s=120)
    one_error_line(result, needle)
    assert directory_snapshot(out) == before
