"""SIGTERM (a scheduler's time limit or preemption) and Ctrl-C stop a run with one line naming the
phase, exit status 128 + the signal, the run lock released and no process left behind
(``rlpkd/stop_signals.py``, ``experiments.cli.run_cli``)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import pytest
import ray

from experiments.cli import run_cli
from experiments.student_workers import StudentWorkerPool
from policies.ray_runtime import _stop_handler_kept_by_ray_init
from rlpkd import stop_signals
from rlpkd.rundir import LOCK_NAME
from rlpkd.stop_signals import (
    RESUME_HINT,
    STOP_SIGNALS,
    RunStopped,
    ctrl_c_ignored_by_children,
    install_stop_handlers,
    on_stop,
    set_phase,
    stop_message,
    stops_deferred,
)
from tests.conftest import REPO, tiny_overrides

# What a stop must never print: a Python traceback, a fatal error, Ray's native stack dump.
CRASH_MARKS = ("Traceback", "Fatal Python error", "SIGTERM received", "SIGINT received")


@pytest.fixture
def fresh_stop_state(monkeypatch):
    """This module's state for one test (no phase, no stop yet) and the signal handlers the test
    process had, put back afterwards."""
    monkeypatch.setattr(stop_signals, "_STATE", stop_signals._StopState())
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _handler() -> Callable[[int, object], None]:
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler) and signal.getsignal(signal.SIGINT) is handler
    return handler


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_raises_run_stopped_once_then_clean_up_is_not_interrupted(
    fresh_stop_state, signum, status
):
    install_stop_handlers()
    handler = _handler()  # called directly: a real SIGTERM would end pytest if this were wrong
    with pytest.raises(RunStopped) as raised:
        handler(signum, None)
    assert raised.value.signum == signum and raised.value.exit_status == status
    assert isinstance(raised.value, KeyboardInterrupt)  # what RLlib, Tune, torch clean up on
    assert handler(signum, None) is None  # the next one, during clean-up: ignored


def test_a_stop_inside_stops_deferred_waits_for_the_block_and_a_second_one_does_not(
    fresh_stop_state,
):
    install_stop_handlers()
    handler = _handler()
    finished = False
    with pytest.raises(RunStopped):
        with stops_deferred():
            handler(signal.SIGTERM, None)
            finished = True
    assert finished

    install_stop_handlers()
    handler = _handler()
    with pytest.raises(RunStopped), stops_deferred():
        handler(signal.SIGINT, None)
        handler(signal.SIGINT, None)  # the user insists: at once
        pytest.fail("the second signal did not raise")


def test_stop_message_names_the_signal_the_phase_and_how_to_continue(fresh_stop_state):
    assert stop_message(RunStopped(signal.SIGTERM)) == "stopped by SIGTERM"
    set_phase("Phase 2: policy learning (PPO)")
    assert stop_message(RunStopped(signal.SIGINT), RESUME_HINT) == (
        "stopped by Ctrl-C (SIGINT) in Phase 2: policy learning (PPO); "
        "rerun the same command with --resume to continue"
    )


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        (RunStopped(signal.SIGTERM), 143, "stopped by SIGTERM in Phase 1: teacher; " + RESUME_HINT),
        # a KeyboardInterrupt that no handler of ours raised is a Ctrl-C too
        (
            KeyboardInterrupt(),
            130,
            "stopped by Ctrl-C (SIGINT) in Phase 1: teacher; " + RESUME_HINT,
        ),
    ],
)
def test_run_cli_ends_a_stop_with_one_line_and_the_signal_status_after_the_clean_up(
    fresh_stop_state, capsys, stop, status, line
):
    cleaned = []

    def main() -> int:
        set_phase("Phase 1: teacher")
        on_stop(lambda: cleaned.append("ray"))
        raise stop

    with pytest.raises(SystemExit) as exited:
        run_cli(main, resumable=True)
    assert exited.value.code == status and cleaned == ["ray"]
    assert capsys.readouterr().err.splitlines() == [line]


def test_processes_started_in_ctrl_c_ignored_by_children_ignore_sigint(fresh_stop_state):
    install_stop_handlers()
    handler = _handler()
    probe = "import signal; signal.raise_signal(signal.SIGINT); print('still running')"
    with ctrl_c_ignored_by_children():
        child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert child.stdout.strip() == "still running", child.stderr
    assert signal.getsignal(signal.SIGINT) is handler  # this process's Ctrl-C is back


def test_a_sigterm_while_workers_start_is_raised_when_they_have_started(fresh_stop_state):
    install_stop_handlers()
    reached_end = False
    with pytest.raises(RunStopped) as stopped, ctrl_c_ignored_by_children():
        signal.raise_signal(signal.SIGTERM)  # mid-start: the workers started must be registered
        reached_end = True
    assert reached_end and stopped.value.signum == signal.SIGTERM


def test_a_ctrl_c_while_workers_start_stops_this_process_at_the_blocks_end_and_not_the_workers():
    # a fresh interpreter: the first spawn also starts multiprocessing's resource tracker,
    # which (CPython 3.11) unblocks SIGINT after it starts
    body = textwrap.dedent(
        """
        import multiprocessing, signal
        from rlpkd.stop_signals import RunStopped, ctrl_c_ignored_by_children, install_stop_handlers

        install_stop_handlers()
        worker = multiprocessing.get_context("spawn").Process(
            target=signal.raise_signal, args=(signal.SIGINT,)
        )
        reached_end = False
        try:
            with ctrl_c_ignored_by_children():
                worker.start()
                worker.join()
                signal.raise_signal(signal.SIGINT)  # a Ctrl-C while the workers start
                reached_end = True
        except RunStopped as stop:
            print("stopped", stop.signum, reached_end, worker.exitcode)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", body],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["stopped", str(int(signal.SIGINT)), "True", "0"], result
    assert "Traceback" not in result.stderr, result.stderr


def test_ray_init_keeps_the_stop_handler_it_would_replace(fresh_stop_state):
    install_stop_handlers()
    handler = _handler()
    with _stop_handler_kept_by_ray_init():
        ray._private.utils.set_sigterm_handler(lambda signum, frame: None)  # what ray.init does
    assert signal.getsignal(signal.SIGTERM) is handler
    assert ray._private.utils.set_sigterm_handler.__module__ == "ray._private.utils"


def test_a_stop_ends_the_student_workers_mid_student_instead_of_waiting_for_them():
    pool = StudentWorkerPool.__new__(StudentWorkerPool)  # its executor, without data or teacher
    pool._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    student = pool._executor.submit(time.sleep, 120)  # a student that takes two minutes
    (worker,) = pool._executor._processes.values()
    start = time.monotonic()
    with pytest.raises(RunStopped), pool:
        raise RunStopped(signal.SIGTERM)
    # ended: its sentinel is ready (is_alive can say True while the executor's thread reaps it)
    assert time.monotonic() - start < 60 and wait([worker.sentinel], 0)
    assert isinstance(student.exception(timeout=60), BrokenProcessPool)


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time in clock ticks, state) of every process (from /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
            except (OSError, IndexError, ValueError):
                continue
    return table


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process below ``pid``."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, int] = {}
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                pending.append(child)
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@dataclass
class _Script:
    """A script in its own process group; its stdout and stderr in files; every process it
    started recorded while it runs (after it exits, its orphans are no longer below it)."""

    args: list[str]
    log_dir: Path
    seen: dict[int, tuple[int, str]] = field(default_factory=dict)
    """pid -> (start time, command line) of every process seen below it."""

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / "stdout.txt"
        self.stderr_path = self.log_dir / "stderr.txt"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.stdout_path.read_text() + "\n--- stderr ---\n" + self.stderr_path.read_text()

    def record(self) -> None:
        for pid, start in _descendants(self.process.pid).items():
            if pid not in self.seen:
                self.seen[pid] = (start, _command(pid))

    def started(self, name: str) -> bool:
        """Whether a process whose command line holds ``name`` has run below it."""
        return any(name in command for _, command in self.seen.values())

    def alive(self) -> list[str]:
        """The processes seen below it that still run (the same pid and start time, no zombie)."""
        table = _processes()
        return [
            f"{pid} {command}"
            for pid, (start, command) in self.seen.items()
            if pid in table and table[pid][1] == start and table[pid][2] != "Z"
        ]

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.record()
            if ready():
                return
            if self.process.poll() is not None:
                pytest.fail(f"exited ({self.process.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout_s:.0f} s:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def stop(self, signum: int, group: bool = False, timeout_s: float = 180) -> int:
        """Send ``signum`` (to the whole process group, as a terminal's Ctrl-C, with ``group``);
        the exit status, as a shell reports it."""
        self.record()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout_s:.0f} s after the signal:\n{self.output()}")
        return 128 - code if code < 0 else code

    def survivors(self, grace_s: float = 10) -> list[str]:
        """The processes it started that are still alive ``grace_s`` after it exited."""
        deadline = time.monotonic() + grace_s
        while (alive := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return alive

    def kill(self) -> None:
        """SIGKILL what is left (a failed test must not leave a run behind)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for entry in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.split()[0]), signal.SIGKILL)


def _assert_stopped_cleanly(script: _Script, out: Path, code: int, status: int, line: str) -> None:
    log = script.output()
    assert code == status, log[-4000:]
    stderr = script.stderr_path.read_text()
    assert stderr.strip().splitlines()[-1] == line, log[-4000:]
    assert not any(mark in stderr for mark in CRASH_MARKS), stderr[-4000:]
    assert not (out / LOCK_NAME).exists()
    assert script.survivors() == []


@pytest.mark.slow
def test_a_second_sigterm_during_clean_up_is_ignored_and_a_third_quits_at_once(tmp_path):
    body = textwrap.dedent(
        """
        import time
        from pathlib import Path
        from experiments.cli import run_cli
        from rlpkd.stop_signals import set_phase

        def main():
            set_phase("Phase 9: waiting")
            try:
                Path("ready").touch()
                time.sleep(120)
            finally:
                Path("cleaning").touch()
                for _ in range(60):  # a slow clean-up that another signal must not cut short
                    time.sleep(0.05)
                Path("cleaned").touch()

        run_cli(main, resumable=True)
        """
    )
    for signals, status, line in (
        (2, 143, "stopped by SIGTERM in Phase 9: waiting; " + RESUME_HINT),
        (3, 143, "stopped by SIGTERM in Phase 9: waiting (clean-up cut short)"),
    ):
        run = tmp_path / f"{signals}-signals"
        run.mkdir()
        (run / "main.py").write_text(body)
        process = subprocess.Popen(
            [sys.executable, "main.py"],
            cwd=run,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (run / "ready").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            while not (run / "cleaning").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            for _ in range(signals - 1):
                process.send_signal(signal.SIGTERM)
                time.sleep(0.05)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == status, stderr
        assert stderr.strip().splitlines()[-1] == line, stderr
        assert "Traceback" not in stderr
        assert (run / "cleaned").exists() == (signals == 2)


@pytest.fixture(scope="module")
def stopped_in_phase_2(tiny_data_root, tmp_path_factory):
    """``train_rl`` on the tiny data (two student workers, PPO long enough to be running), sent
    SIGTERM once PPO has finished an iteration, as a scheduler ends a job: the run directory,
    the script and its exit status."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    overrides = [*tiny_overrides(tiny_data_root), "rl.iterations=40", "runtime.student_workers=2"]
    args = ["scripts/train_rl.py", "--debug", "--out", str(out)]
    args += [f"--set={item}" for item in overrides]
    script = _Script(args, out.parent)
    try:
        progress = out / "checkpoints" / "policy" / "progress.json"
        script.wait_until(progress.exists, "PPO iteration")
        code = script.stop(signal.SIGTERM)
        yield out, args, script, code
    finally:
        script.kill()


@pytest.mark.slow
def test_sigterm_while_ppo_runs_on_ray_ends_with_one_line_143_and_nothing_left(stopped_in_phase_2):
    out, _, script, code = stopped_in_phase_2
    line = "stopped by SIGTERM in Phase 2: policy learning (PPO); " + RESUME_HINT
    _assert_stopped_cleanly(script, out, code, 143, line)
    assert script.started("raylet")  # Ray ran, and PPO on it


@pytest.mark.slow
def test_resume_after_it_continues_and_ctrl_c_stops_the_student_workers(stopped_in_phase_2):
    out, args, _, _ = stopped_in_phase_2
    script = _Script([*args, "--resume"], out.parent / "resumed")  # no lock error: it starts
    try:
        script.wait_until(lambda: script.started("spawn_main"), "Phase-3 student worker")
        code = script.stop(signal.SIGINT, group=True)  # a terminal's Ctrl-C
        line = (
            "stopped by Ctrl-C (SIGINT) in Phase 3: policy-guided distillation and baselines; "
            + RESUME_HINT
        )
        _assert_stopped_cleanly(script, out, code, 130, line)
        assert "starting Phase 2 over" not in script.output()  # PPO continued its checkpoint
    finally:
        script.kill()
