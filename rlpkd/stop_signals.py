"""Stopping a run the way clusters stop jobs: SIGTERM (a time limit, a preemption) and Ctrl-C.

``install_stop_handlers`` (``experiments.cli.run_cli`` calls it) makes SIGTERM and SIGINT raise
:class:`RunStopped` in the main thread, so every ``finally`` and ``with`` on the way out runs: the
run lock is released, PPO's algorithm and the student workers stop. ``run_cli`` then runs the
clean-up registered with :func:`on_stop` (shutting down the Ray this process started) and ends
with one line naming the phase (:func:`set_phase`, :func:`stop_message`) and the exit status
128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C).

Once a stop was raised, the next signal is ignored, so it cannot cut the clean-up short with a
traceback; the one after quits at once (a clean-up that hangs, or a stop that some library
swallowed). ``ray.init`` replaces the SIGTERM handler (Ray's core worker would print a native
stack dump and abort), so ``policies.ray_runtime.start_ray`` starts Ray inside
:func:`stops_deferred` (a half-started node leaves processes behind) and calls
:func:`reinstall_stop_handlers` after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from types import FrameType

__all__ = [
    "RunStopped",
    "STOP_SIGNALS",
    "RESUME_HINT",
    "install_stop_handlers",
    "reinstall_stop_handlers",
    "stop_handlers_installed",
    "stops_deferred",
    "set_phase",
    "on_stop",
    "finish_stop",
    "stop_message",
    "ctrl_c_ignored_by_children",
]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a run: a scheduler's (time limit, preemption) and Ctrl-C."""

RESUME_HINT = "rerun the same command with --resume to continue"
"""What the stop line says of a script whose ``--resume`` continues an interrupted run."""


class RunStopped(KeyboardInterrupt):
    """A stop signal arrived (raised in the main thread by the handler this module installs).

    A KeyboardInterrupt, so code that already cleans up on Ctrl-C (RLlib, Ray Tune, the student
    workers) does the same on SIGTERM.

    Args:
        signum: the signal's number (``signal.SIGTERM``, ``signal.SIGINT``).
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + self.signum

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return type(self), (self.signum,)


class _StopState:
    """What this process knows about stopping (one per process; ``install`` resets it)."""

    def __init__(self) -> None:
        self.installed = False
        self.stop: RunStopped | None = None
        self.raised = False
        self.signals_since_raised = 0
        self.deferring = 0
        self.phase: str | None = None
        self.callbacks: list[Callable[[], object]] = []


_STATE = _StopState()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_stop(stop: RunStopped) -> None:
    _STATE.raised = True
    raise stop


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """The handler of STOP_SIGNALS: the first raises RunStopped (or, inside ``stops_deferred``,
    waits for the block's end); once raised, the next is ignored and the one after quits."""
    if _STATE.stop is None:
        _STATE.stop = RunStopped(signum)
        if _STATE.deferring:
            return
        _raise_stop(_STATE.stop)
    if not _STATE.raised:  # a second signal inside stops_deferred: the user insists
        _raise_stop(_STATE.stop)
    _STATE.signals_since_raised += 1
    if _STATE.signals_since_raised >= 2:
        # straight to the file descriptor: the main thread may be halfway through a write to
        # sys.stderr (a progress bar), and a buffered write from here would then fail
        os.write(2, f"{stop_message(_STATE.stop)} (clean-up cut short)\n".encode())
        os._exit(_STATE.stop.exit_status)


def install_stop_handlers() -> None:
    """Make SIGTERM and SIGINT raise RunStopped in the main thread (a fresh state: no phase, no
    stop yet, no clean-up registered). Does nothing outside the main thread."""
    if not _in_main_thread():
        return
    global _STATE
    _STATE = _StopState()
    _STATE.installed = True
    reinstall_stop_handlers()


def stop_handlers_installed() -> bool:
    """Whether :func:`install_stop_handlers` ran in this process (a script under ``run_cli``)."""
    return _STATE.installed


def reinstall_stop_handlers() -> None:
    """Put the handlers back after a library replaced them (``ray.init`` does, for SIGTERM);
    nothing unless :func:`install_stop_handlers` ran, or outside the main thread."""
    if _STATE.installed and _in_main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _on_stop_signal)


@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold a stop signal until the block ends, then raise it: for steps that must not be cut in
    the middle (starting Ray: a half-started node leaves processes behind). A second signal
    inside the block raises at once."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
    if _STATE.stop is not None and not _STATE.raised and not _STATE.deferring:
        _raise_stop(_STATE.stop)


def set_phase(name: str | None) -> None:
    """Record the phase the run is in (e.g. 'Phase 2: policy learning (PPO)'), for the stop line."""
    _STATE.phase = name


def on_stop(callback: Callable[[], object]) -> None:
    """Register clean-up that :func:`finish_stop` runs (latest first) when a stop signal ends the
    run, e.g. ``ray.shutdown`` for the Ray this process started."""
    _STATE.callbacks.append(callback)


def finish_stop(stop: RunStopped) -> None:
    """Mark ``stop`` as raised (a later signal is ignored, the one after quits) and run the
    :func:`on_stop` clean-up, latest first; a clean-up that fails is skipped."""
    if _STATE.stop is None:
        _STATE.stop = stop
    _STATE.raised = True
    callbacks, _STATE.callbacks = _STATE.callbacks[::-1], []
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()


def stop_message(stop: RunStopped, hint: str | None = None) -> str:
    """The stop line: the signal, the phase (when one was recorded) and ``hint`` (what continues
    the run, e.g. :data:`RESUME_HINT`)."""
    name = signal.Signals(stop.signum).name
    line = "stopped by " + ("Ctrl-C (SIGINT)" if stop.signum == signal.SIGINT else name)
    if _STATE.phase:
        line += f" in {_STATE.phase}"
    return f"{line}; {hint}" if hint else line


@contextlib.contextmanager
def ctrl_c_ignored_by_children() -> Iterator[None]:
    """Processes started inside the block never see SIGINT: a terminal's Ctrl-C reaches the whole
    process group, and workers that the main process stops itself should not each print a
    traceback.

    The block blocks SIGINT in this thread (a signal mask survives fork and exec, and every
    thread a child starts inherits it, so a Ctrl-C stays pending in the children forever); it
    does not ignore it here. A stop that arrives inside the block (a Ctrl-C, or SIGTERM) is
    raised when the block ends (:func:`stops_deferred`), once every process it started is
    registered with whoever stops them. CPython protects its resource tracker the same way
    (bpo-33613), but unblocks SIGINT unconditionally after starting it, so the tracker is
    started before the mask is set.
    """
    if not _in_main_thread():
        yield
        return
    resource_tracker.ensure_running()  # not inside: its first start unblocks SIGINT
    with stops_deferred():
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            # a SIGINT that arrived inside the block is delivered here; stops_deferred raises it
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
