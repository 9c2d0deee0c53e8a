"""Scripts turn bad input into one clear line and a non-zero exit, and never clobber old results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_bad_config_key_exits_nonzero_with_one_line(tmp_path):
    result = _run("scripts/train_teacher.py", "--debug", "--set", "teacher.detph=18")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:")
    assert "teacher.detph" in result.stderr and "Traceback" not in result.stderr


def test_missing_annotation_file_is_a_clear_error_and_keeps_old_results(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"AP": 0.5}))
    result = _run(
        "scripts/distill.py",
        "--debug",
        "--set",
        "data.source=coco",
        "--set",
        f"data.train_images={tmp_path}",
        "--set",
        f"data.train_annotations={tmp_path / 'missing.json'}",
        "--set",
        f"data.val_images={tmp_path}",
        "--set",
        f"data.val_annotations={tmp_path / 'missing.json'}",
        "--out",
        str(out),
    )
    assert result.returncode == 2
    assert "missing.json" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((out / "metrics.json").read_text()) == {"AP": 0.5}
    assert not (out / "config.yaml").exists()


def test_corrupt_image_is_a_clear_error(tmp_path, tiny_data_root):
    source = next(tiny_data_root.glob("embedded-*"))
    images = tmp_path / "images"
    images.mkdir()
    for png in (source / "images" / "val").glob("*.png"):
        (images / png.name).write_bytes(png.read_bytes())
    broken = sorted(images.glob("*.png"))[0]
    broken.write_bytes(b"not a png at all")
    annotations = source / "annotations" / "val.json"
    result = _run(
        "scripts/train_teacher.py",
        "--debug",
        "--set",
        "data.source=coco",
        "--set",
        f"data.train_images={images}",
        "--set",
        f"data.train_annotations={annotations}",
        "--set",
        f"data.val_images={images}",
        "--set",
        f"data.val_annotations={annotations}",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 2
    assert broken.name in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_level_spec_exits_nonzero():
    result = _run("scripts/distill.py", "--debug", "--levels", "P7")
    assert result.returncode == 2 and "P7" in result.stderr


def test_data_smaller_than_one_batch_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("an earlier report\n")
    data = tmp_path / "data"
    args = ["--debug", "--out", str(out), "--set", f"data.root={data}", "--set"]
    result = _run("scripts/train_rl.py", *args, "data.num_train=8")
    assert result.returncode == 2, result.stderr[-2000:]
    # (the embedded data's generation bar comes before it)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: the training split has 8 images")
    assert "teacher_schedule.batch_size 16" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # nothing written
