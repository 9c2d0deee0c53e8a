"""scripts/evaluate.py re-evaluates a checkpoint to the metrics its training run reported."""

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
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_evaluate_reproduces_the_teacher_metrics(tiny_data_root, tmp_path):
    common = [
        "--debug",
        "--set",
        f"data.root={tiny_data_root}",
        "--set",
        "data.num_train=24",
        "--set",
        "data.num_val=12",
        "--set",
        "teacher_schedule.epochs=3",
        "--set",
        "teacher_schedule.batch_size=8",
        "--set",
        "runtime.progress=false",
    ]
    trained = _run("scripts/train_teacher.py", *common, "--out", str(tmp_path / "teacher"))
    assert trained.returncode == 0, trained.stderr
    evaluated = _run(
        "scripts/evaluate.py",
        "--checkpoint",
        str(tmp_path / "teacher" / "checkpoints" / "teacher.pt"),
        "--out",
        str(tmp_path / "eval"),
        "--set",
        "runtime.progress=false",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    before = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    after = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("AP", "AP50", "APs"):
        assert after[key] == before[key] or (after[key] is None and before[key] is None)
    assert after["role"] == "teacher"
    assert isinstance(json.loads((tmp_path / "eval" / "predictions.json").read_text()), list)
