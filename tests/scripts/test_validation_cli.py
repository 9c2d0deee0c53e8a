"""Scripts check the whole config, their inputs and --out before writing anything (issue 8):
each bad input is exit 2 and one line ``error: ...``, and an existing run is byte-for-byte
unchanged."""

from __future__ import annotations

import os
import subprocess

import pytest

from rlpkd.rundir import run_lock
from tests.conftest import one_error_line, run_script
from tests.dir_snapshot import directory_snapshot

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def _run(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return run_script(script, *args, cwd=cwd, timeout_s=120)


def _run_on(old_run, script: str, data_root, *overrides: str) -> subprocess.CompletedProcess:
    """``script --debug`` on the tiny data with ``--set`` ``overrides``, writing to ``old_run``."""
    sets = [arg for item in (f"data.root={data_root}", *overrides) for arg in ("--set", item)]
    return _run(script, "--debug", *sets, "--out", str(old_run), cwd=old_run.parent)


@pytest.fixture
def old_run(tmp_path):
    """An existing run directory (a config, metrics and a checkpoint) that must survive."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("rl: {lam: 0.5}\n")
    (run / "metrics.json").write_text('{"AP": 0.5}\n')
    (run / "checkpoints" / "teacher.pt").write_bytes(b"old teacher")
    return run


@pytest.mark.parametrize(
    ("script", "overrides", "needles"),
    [
        ("scripts/train_rl.py", ["student_schedule.lr=.nan"], ["student_schedule.lr", "nan"]),
        ("scripts/train_rl.py", ["rl.lam=-1"], ["'rl.lam' is -1.0", ">= 0"]),
        ("scripts/train_rl.py", ["rl.slots=0"], ["'rl.slots' is 0", ">= 1"]),
        ("scripts/distill.py", ["student_schedule.lr=-0.1"], ["student_schedule.lr", "> 0"]),
        ("scripts/distill.py", ["teacher_schedule.epochs=0"], ["teacher_schedule.epochs"]),
        ("scripts/distill.py", ["distill.loss=nope"], ["'distill.loss' is 'nope'", "pkd"]),
        ("scripts/distill.py", ["data.hflip_prob=2"], ["data.hflip_prob", "in [0, 1]"]),
        # 1e-3 is read as a float: the error is about the other key, not about the lr
        ("scripts/distill.py", ["student_schedule.lr=1e-3", "rl.slots=0"], ["'rl.slots'"]),
    ],
)
def test_bad_value_fails_in_one_line_and_keeps_the_old_run(
    script, overrides, needles, old_run, tiny_data_root
):
    before = directory_snapshot(old_run)
    one_error_line(_run_on(old_run, script, tiny_data_root, *overrides), *needles)
    assert directory_snapshot(old_run) == before


def test_missing_teacher_argument_fails_before_writing(old_run, tmp_path):
    before = directory_snapshot(old_run)
    missing = tmp_path / "no-teacher.pt"
    result = _run(
        "scripts/distill.py",
        "--debug",
        "--teacher",
        str(missing),
        "--out",
        str(old_run),
        cwd=tmp_path,
    )
    one_error_line(result, "--teacher checkpoint not found", str(missing))
    assert directory_snapshot(old_run) == before


def test_out_that_is_a_file_is_one_line_and_the_file_is_kept(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n1,2\n")
    result = _run("scripts/train_teacher.py", "--debug", "--out", str(target), cwd=tmp_path)
    one_error_line(result, str(target), "is a file")
    assert target.read_text() == "a,b\n1,2\n"


def test_second_run_on_a_locked_directory_fails_naming_the_holder(old_run, tiny_data_root):
    with run_lock(old_run):
        before = directory_snapshot(old_run)
        result = _run_on(old_run, "scripts/distill.py", tiny_data_root)
        one_error_line(result, str(old_run), f"pid {os.getpid()}", "in use")
        assert directory_snapshot(old_run) == before


@pytest.mark.parametrize(
    "script", ["scripts/train_teacher.py", "scripts/distill.py", "scripts/meta_train.py"]
)
def test_damaged_teacher_in_the_run_fails_before_writing(script, old_run, tiny_data_root):
    before = directory_snapshot(old_run)  # old_run's teacher.pt holds 11 foreign bytes
    result = _run_on(old_run, script, tiny_data_root, "runtime.progress=false")
    one_error_line(result, "cannot read teacher checkpoint", "not a torch checkpoint")
    assert directory_snapshot(old_run) == before
