"""Phase-3 students trained at once in worker processes (``runtime.student_workers``).

Each Phase-3 student (DESIGN §8) is independent of the others given the teacher, the data and
the frozen policy, so ``train_rl`` can train several at a time. A worker is a separate process
(``spawn``) that builds its own copy of the data, the frozen teacher (from the run's
``checkpoints/teacher.pt``) and the FLOPs model once, with ``runtime.num_threads`` split between
the workers (at least one thread each), then trains the students it is given exactly as the
main process would (same fingerprints, same run directories, reused when finished). On a CPU the
gain is what running two single-threaded students side by side buys over one two-threaded one
(``scripts/benchmark.py`` does not measure it; docs/results.md has the ``make run`` wall times).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch

from experiments.run_setup import open_run, student_inputs
from rlpkd.config import Config
from rlpkd.stop_signals import ctrl_c_ignored_by_children
from rlpkd.training.student_phase import StudentRunInputs
from rlpkd.training.teacher_phase import load_or_train_teacher

__all__ = ["StudentJob", "threads_per_worker", "worker_config", "StudentWorkerPool"]


@dataclass(frozen=True)
class StudentJob:
    """One Phase-3 student: its method name, level spec and seed."""

    method: str
    spec: str
    seed: int


def threads_per_worker(num_threads: int, workers: int) -> int:
    """Torch threads of each of ``workers`` processes: ``num_threads`` (0: torch's default in
    this process) split evenly, at least 1."""
    total = num_threads if num_threads > 0 else torch.get_num_threads()
    return max(1, total // max(1, workers))


def worker_config(config: Config) -> Config:
    """The config a worker runs with: its share of the threads and no per-step progress bars
    (the main process shows one bar over the students)."""
    runtime = dataclasses.replace(
        config.runtime,
        num_threads=threads_per_worker(config.runtime.num_threads, config.runtime.student_workers),
        progress=False,
    )
    return dataclasses.replace(config, runtime=runtime)


_INPUTS: StudentRunInputs | None = None
"""The worker process's data, teacher and FLOPs model (built once by ``_start_worker``)."""


def _start_worker(config: Config) -> None:
    global _INPUTS
    opened = open_run(config, progress=False)
    # the main process trained (or checked) the teacher before Phase 3: this only loads it
    teacher, _ = load_or_train_teacher(
        config, opened.datasets, opened.device, opened.run_dir, progress=False
    )
    _INPUTS = student_inputs(config, opened, teacher)


def _run_job(
    run_one: Callable[[StudentRunInputs, StudentJob, Path], dict[str, Any]],
    job: StudentJob,
    weights: Path,
) -> dict[str, Any]:
    if _INPUTS is None:
        raise RuntimeError("student worker used before it was started")
    return run_one(_INPUTS, job, weights)


class StudentWorkerPool:
    """``runtime.student_workers`` processes that train Phase-3 students (see module doc).

    Args:
        config: the run's config (each worker gets ``worker_config(config)``).
        run_one: a module-level function ``(inputs, job, weights) -> metrics`` that trains or
            reuses one student; it is pickled by reference into the workers.
        weights: the frozen policy's weights file.
    """

    def __init__(
        self,
        config: Config,
        run_one: Callable[[StudentRunInputs, StudentJob, Path], dict[str, Any]],
        weights: Path,
    ) -> None:
        self.run_one = run_one
        self.weights = Path(weights)
        self._executor = ProcessPoolExecutor(
            max_workers=config.runtime.student_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(worker_config(config),),
        )

    def submit(self, jobs: Sequence[StudentJob]) -> list[Future]:
        """Queue ``jobs``; one future of metrics per job, in order."""
        # a worker starts at a submit; a terminal's Ctrl-C reaches it too, but the main process
        # stops the workers (``__exit__``), so they ignore it
        with ctrl_c_ignored_by_children():
            return [
                self._executor.submit(_run_job, self.run_one, job, self.weights) for job in jobs
            ]

    def close(self, cancel: bool = False) -> None:
        """Wait for the queued jobs (or drop those not started, with ``cancel``) and stop."""
        self._executor.shutdown(wait=True, cancel_futures=cancel)

    def terminate(self, timeout_s: float = 10.0) -> None:
        """Stop now (a stop signal): drop the queued jobs and end the workers mid-student; an
        interrupted student continues from its last epoch's resume file when run again."""
        # the executor's worker processes (a public terminate_workers only from Python 3.14)
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            # the sentinel, not is_alive: the executor's own thread may reap the worker first,
            # and is_alive then says True for a process that has ended
            if not wait([process.sentinel], timeout_s):
                process.kill()
                wait([process.sentinel])

    def __enter__(self) -> StudentWorkerPool:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (rlpkd.stop_signals)
            self.terminate()
        else:
            self.close(cancel=error is not None)
