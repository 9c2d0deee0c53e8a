"""One run per directory: ``<out>/.lock`` (issue 8)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from rlpkd.errors import RunLockedError
from rlpkd.rundir import LOCK_NAME, RunLock, run_lock
from tests.conftest import REPO


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_holds_pid_host_and_start_and_is_released(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["hostname"] == socket.gethostname()
        assert record["started"]
    assert not (out / LOCK_NAME).exists() and out.is_dir()


def test_second_acquisition_while_holder_lives_is_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with run_lock(out):
        before = (out / LOCK_NAME).read_bytes()
        with pytest.raises(RunLockedError) as error:
            RunLock(out).acquire()
        assert (out / LOCK_NAME).read_bytes() == before  # the holder's lock is untouched
    message = str(error.value)
    assert "\n" not in message and str(out) in message and f"pid {os.getpid()}" in message


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    record = {"pid": pid, "hostname": socket.gethostname(), "started": "then"}
    (out / LOCK_NAME).write_text(json.dumps(record))
    with run_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"stale lock {out / LOCK_NAME} of pid {pid}" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()


def test_lock_of_a_process_killed_with_sigkill_is_taken_over(tmp_path):
    out = tmp_path / "run"
    code = (
        "import sys, time; from rlpkd.rundir import RunLock; "
        f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # kill -9 leaves it behind ...
    with run_lock(out):  # ... and the next run takes it over
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_lock_is_released_when_the_run_raises(tmp_path, error):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(error), run_lock(out):
        raise error("boom")
    assert not (out / LOCK_NAME).exists()
    with run_lock(out):  # free again
        pass


def test_directory_the_lock_created_is_removed_when_left_empty(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), run_lock(out):
        assert out.is_dir()
        raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "new").exists()
    with run_lock(out):
        (out / "metrics.json").write_text("{}")
    assert (out / "metrics.json").exists() and not (out / LOCK_NAME).exists()
