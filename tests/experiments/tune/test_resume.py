"""An interrupted sweep resumes without re-running the trials that finished (scripts/sweep.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlpkd.rundir import read_json
from tests.conftest import REPO
from tests.experiments.tune.conftest import DEBUG_CONFIG, tiny_sweep_overrides

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script

FIRST, SECOND, THIRD = "baseline-none-seed0", "baseline-all-seed0", "baseline-P2-seed0"


class _Sweep:
    """``scripts/sweep.py`` in its own process group, its output in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "scripts/sweep.py", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"sweep did not exit within {timeout_s:.0f} s:\n{self.output()[-3000:]}")

    def wait_for(self, path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if self.process.poll() is not None:
                pytest.fail(
                    f"sweep exited ({self.process.returncode}) before {path} appeared:\n"
                    f"{self.output()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(
                    f"{path} did not appear within {timeout_s:.0f} s:\n{self.output()[-3000:]}"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        self.kill()
        self._handle.close()


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tiny_data_root, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = tiny_sweep_overrides(
        tiny_data_root, sweep, "sweep.baselines=[none,all,P2]", "sweep.max_concurrent_trials=1"
    )
    args = ["--config", str(DEBUG_CONFIG)] + [f"--set={item}" for item in overrides]
    trials = sweep / "trials"

    first = _Sweep(args, tmp_path / "first.log")
    try:
        # One trial at a time: the second has started, so Tune has recorded the first as done.
        first.wait_for(trials / SECOND / "attempts.json", timeout_s=240)
        os.kill(first.process.pid, signal.SIGINT)  # the driver only: Tune stops and saves state
        code = first.wait(timeout_s=120)
    finally:
        first.close()
    log = first.output()
    assert code == 130, log[-3000:]
    unfinished = [line for line in log.splitlines() if line.startswith("  unfinished:")]
    assert unfinished and THIRD in unfinished[0], log[-3000:]  # never created by Tune, still listed
    assert "/3 trials finished" in log, log[-3000:]
    assert not (trials / THIRD / "metrics.json").exists(), "the interrupt came too late to test"
    done = trials / FIRST / "metrics.json"
    finished_bytes, finished_mtime = done.read_bytes(), done.stat().st_mtime_ns

    second = _Sweep([*args, "--resume"], tmp_path / "second.log")
    try:
        code = second.wait(timeout_s=240)
    finally:
        second.close()
    log = second.output()
    assert code == 0, log[-3000:]
    assert "3/3 trials finished, 0 diverged, 0 errored" in log, log[-3000:]
    assert "starting a new one" not in log  # it restored the experiment
    for trial_id in (FIRST, SECOND, THIRD):
        assert (trials / trial_id / "metrics.json").is_file(), trial_id
    # The finished trial was not run again: not even reused (which would count an attempt).
    assert read_json(trials / FIRST / "attempts.json") == {"attempts": 1}
    assert done.read_bytes() == finished_bytes and done.stat().st_mtime_ns == finished_mtime
    assert read_json(trials / THIRD / "attempts.json") == {"attempts": 1}
    assert (sweep / "report.md").is_file()
