"""One Ray Tune experiment over every trial of a sweep (DESIGN §8).

``run_sweep`` is the whole driver, top to bottom: validate the config (and, with ``--resume``,
that it is the sweep's), start or join Ray (an unreachable address fails within seconds), check
that the cluster can hold one trial's resources, validate the data — all before anything in the
sweep directory is written or deleted — then train the shared teacher, run every ``TrialSpec`` as
a Tune trial with explicit resources, write the comparison report and say which trials finished,
which errored (with their error files) and which did not run.

Layout of a sweep directory (``runtime.out``)::

    <sweep>/config.yaml, teacher/     the resolved config and the shared teacher
    <sweep>/trials/<trial_id>/        each trial's run directory (DESIGN §11), written by run_trial
    <sweep>/tune/<trial_id>/          Tune's own bookkeeping (params, result.json, error.txt)
    <sweep>/report.md, report.json, results.csv, plots/pareto.png

``--resume`` restores ``<sweep>/tune``: finished trials are kept, interrupted ones start again
(and continue from their own checkpoints in ``trials/<trial_id>``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from experiments.resume_checks import changed_keys
from experiments.tune.scheduler import (
    TIME_ATTR,
    # kept importable from here: the tuner.pkl of a sweep started before the scheduler had its
    # own module names experiments.tune.sweep.RLTrialsASHA, and --resume unpickles it
    RLTrialsASHA,  # noqa: F401
    build_scheduler,
    trial_spec_values,
)
from experiments.tune.trials import (
    FAILED_FILE,
    TrialSpec,
    absolute_paths,
    build_trial_specs,
    prepare_sweep,
    run_trial,
    trial_dir,
)
from policies.learner_gpus import CudaSight, learner_gpu_problem
from policies.ray_runtime import start_ray
from rlpkd.config import Config, config_from_dict, config_to_dict, load_config
from rlpkd.errors import ConfigError, ResourceError, ResumeMismatchError, UserError
from rlpkd.report.comparison import build_sweep_report

__all__ = [
    "TUNE_DIR_NAME",
    "sweep_trainable",
    "build_tuner",
    "check_resumable",
    "check_trial_resources",
    "trial_outcomes",
    "run_sweep",
]

TUNE_DIR_NAME = "tune"
"""Tune's experiment directory inside the sweep directory (what ``--resume`` restores)."""
MAX_FAILURES = 1
"""Tune retries a failed trial once: a lost node or an OOM-killed worker is worth one retry (the
trial continues from its own checkpoints); a deterministic bug fails twice and is reported."""


# --------------------------------------------------------------------------------------------
# The trainable: one trial inside a Tune worker.


def _tune_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a trial's metrics (Tune results hold numbers and short strings)."""
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, (bool, int, float, str)) and key != TIME_ATTR
    }


def sweep_trainable(params: dict[str, Any]) -> None:
    """Tune function trainable: run one trial and report its final metrics.

    ``params`` = {"trial": TrialSpec.to_dict(), "config": config_to_dict(config), "sweep_dir": str}.
    RL trials also report ``{training_iteration, policy_return}`` after every PPO iteration (what
    ASHA reads); every trial reports its final metrics (AP, kd_gflops, ..., node_id) once at the end.
    """
    config = config_from_dict(params["config"], "sweep trial config")
    threads = config.sweep.trial_threads
    if threads > 0:
        torch.set_num_threads(threads)
        config = dataclasses.replace(
            config, runtime=dataclasses.replace(config.runtime, num_threads=threads)
        )
    spec = TrialSpec.from_dict(params["trial"])

    def report_iteration(result: dict[str, Any]) -> None:
        tune.report(dict(result))

    metrics = run_trial(spec, config, Path(params["sweep_dir"]), report=report_iteration)
    tune.report(_tune_metrics(metrics))


# --------------------------------------------------------------------------------------------
# The Tuner.


def _trial_id(trial: Any) -> str:
    return trial_spec_values(trial).get("trial_id") or trial.trial_id


def build_tuner(
    config: Config, sweep_dir: Path, specs: list[TrialSpec], progress: bool = True
) -> tune.Tuner:
    """A Tuner running ``specs`` (one grid point each) into ``<sweep_dir>/tune``."""
    sweep = config.sweep
    trainable = tune.with_resources(sweep_trainable, _trial_resources(config))
    param_space = {
        "trial": tune.grid_search([spec.to_dict() for spec in specs]),
        "config": config_to_dict(config),
        "sweep_dir": str(sweep_dir),
    }
    tune_config = tune.TuneConfig(
        scheduler=build_scheduler(config),
        max_concurrent_trials=sweep.max_concurrent_trials or None,
        trial_name_creator=_trial_id,
        trial_dirname_creator=_trial_id,
    )
    run_config = tune.RunConfig(
        name=TUNE_DIR_NAME,
        storage_path=str(sweep_dir),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        verbose=1 if progress else 0,
    )
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


def _trial_resources(config: Config) -> dict[str, float]:
    return {"cpu": config.sweep.trial_cpus, "gpu": config.sweep.trial_gpus}


def _restore_tuner(tune_dir: Path, config: Config) -> tune.Tuner:
    """The interrupted experiment at ``tune_dir``: finished trials stay finished, unfinished and
    errored ones run again (continuing from their run directories' checkpoints). Trials keep
    the config they were created with; only the resources per trial follow ``config``."""
    trainable = tune.with_resources(sweep_trainable, _trial_resources(config))
    return tune.Tuner.restore(
        str(tune_dir),
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=True,
        restart_errored=False,
    )


RESUMABLE_CHANGES = ("sweep.trial_cpus", "sweep.trial_gpus", "runtime.progress")
"""Config keys a resumed sweep may change (the rest is fixed in the restored trials)."""
SHOWN_CHANGES = 6
"""At most this many changed keys are spelled out in a resume error."""


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(config: Config, sweep_dir: Path) -> None:
    """Raise ResumeMismatchError when ``config`` differs from the one the sweep was started with
    (a restored experiment would silently run the old trials with the old config); the one-line
    message names every changed key as ``key old -> new``. Reads only."""
    saved_path = Path(sweep_dir) / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = _flat(config_to_dict(load_config(saved_path)))
    except ConfigError as error:
        raise ResumeMismatchError(f"--resume: {error}; run without --resume") from None
    current = _flat(config_to_dict(config))
    for key in RESUMABLE_CHANGES:
        saved.pop(key, None)
        current.pop(key, None)
    changed = changed_keys(saved, current)
    if changed:
        more = len(changed) - SHOWN_CHANGES
        shown = ", ".join(changed[:SHOWN_CHANGES]) + (f" and {more} more" if more > 0 else "")
        raise ResumeMismatchError(
            f"--resume: the sweep at {sweep_dir} was started with another config: {shown}; "
            "resume with the same config, or run without --resume (finished trials are reused)"
        )


# --------------------------------------------------------------------------------------------
# Outcomes and the driver.


def _error_line(error: BaseException | None) -> str:
    text = str(error or "").strip().splitlines()
    return text[-1] if text else type(error).__name__


def trial_outcomes(results: Any, sweep_dir: Path, trial_ids: list[str]) -> dict[str, Any]:
    """Sort the sweep's trials into finished, stopped early (ASHA), diverged, errored and
    unfinished.

    A trial is finished when Tune completed it and its run directory holds ``metrics.json``; a
    trial whose run directory holds ``failed.json`` diverged (a result of the experiment, listed
    as failed in the report); another errored one is listed with its error file
    (``<sweep>/tune/<trial_id>/error.txt``); a trial Tune had not yet created when the sweep was
    interrupted counts as unfinished.
    """
    outcome: dict[str, Any] = {
        "statuses": {},
        "finished": [],
        "stopped_early": [],
        "diverged": [],
        "errored": [],
        "unfinished": [],
    }
    for result in results:
        trial_id = Path(result.path).name
        metrics = result.metrics or {}
        if result.error is not None and (trial_dir(sweep_dir, trial_id) / FAILED_FILE).is_file():
            status = "DIVERGED"
            outcome["diverged"].append({"trial_id": trial_id, "error": _error_line(result.error)})
        elif result.error is not None:
            status = "ERROR"
            outcome["errored"].append(
                {
                    "trial_id": trial_id,
                    "error_file": str(Path(result.path) / "error.txt"),
                    "error": _error_line(result.error),
                }
            )
        elif metrics.get("done"):
            status = "TERMINATED"
            finished = (trial_dir(sweep_dir, trial_id) / "metrics.json").is_file()
            outcome["finished" if finished else "stopped_early"].append(trial_id)
        else:
            status = "UNFINISHED"
            outcome["unfinished"].append(trial_id)
        outcome["statuses"][trial_id] = status
    for trial_id in trial_ids:
        if trial_id not in outcome["statuses"]:
            outcome["statuses"][trial_id] = "UNFINISHED"
            outcome["unfinished"].append(trial_id)
    return outcome


def _amount(value: float, unit: str) -> str:
    return f"{value:g} {unit}{'' if value == 1 else 's'}"


def check_trial_resources(config: Config) -> None:
    """Fail when no node of the running Ray cluster can hold one trial (``sweep.trial_cpus`` CPUs
    and ``sweep.trial_gpus`` GPUs on one node, a fractional GPU needing a GPU), or when RL trials
    ask RLlib for learner GPUs the cluster does not have: Tune would wait for them forever.

    Raises:
        ResourceError: one line with what a trial asks and what the nodes have.
        ConfigError: RL trials hold no GPU (``sweep.trial_gpus`` 0) but their local learner
            (``rl.num_learners`` 0) is to learn on ``rl.num_gpus_per_learner`` GPUs.
    """
    sweep = config.sweep
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]
    have = sorted(
        ((node.get("CPU", 0.0), node.get("GPU", 0.0)) for node in nodes), key=lambda r: r[::-1]
    )
    if not any(cpus >= sweep.trial_cpus and gpus >= sweep.trial_gpus for cpus, gpus in have):
        nodes_text = "; ".join(
            f"{_amount(cpus, 'CPU')}, {_amount(gpus, 'GPU')}" for cpus, gpus in have
        )
        fix = "--set sweep.trial_gpus=0" if sweep.trial_gpus > 0 else "lower sweep.trial_cpus"
        raise ResourceError(
            f"sweep: a trial asks for {_amount(sweep.trial_cpus, 'CPU')} and "
            f"{_amount(sweep.trial_gpus, 'GPU')} on one node (sweep.trial_cpus, "
            f"sweep.trial_gpus), but no node of the Ray cluster has that much (nodes: "
            f"{nodes_text or 'none'}); {fix}, or join a cluster that has them (--address)"
        )
    learner_gpus = config.rl.num_gpus_per_learner * max(1, config.rl.num_learners)
    if sweep.rl_lams and learner_gpus > sum(gpus for _, gpus in have):
        raise ResourceError(
            f"sweep: RL trials ask RLlib for {_amount(learner_gpus, 'GPU')} "
            f"(rl.num_gpus_per_learner) but the Ray cluster has "
            f"{_amount(sum(gpus for _, gpus in have), 'GPU')}; --set rl.num_gpus_per_learner=0"
        )
    if sweep.rl_lams and sweep.trial_gpus <= 0 and config.rl.num_learners == 0:
        # the local learner runs in the trial, which holds no GPU: RLlib would ignore the setting
        no_gpu = CudaSight(gpu_ids=(), cuda_visible_devices=None, cuda_available=False)
        problem = learner_gpu_problem(0, config.rl.num_gpus_per_learner, no_gpu, True)
        if problem:
            raise ConfigError(f"sweep: {problem}")


def _summary_lines(outcome: dict[str, Any], total: int, report: Path | None) -> list[str]:
    lines = [
        f"sweep: {len(outcome['finished'])}/{total} trials finished, "
        f"{len(outcome['diverged'])} diverged, {len(outcome['errored'])} errored, "
        f"{len(outcome['stopped_early'])} stopped early by ASHA, "
        f"{len(outcome['unfinished'])} not run to the end"
    ]
    for failure in outcome["diverged"]:
        lines.append(
            f"  diverged (failed in the report): {failure['trial_id']}: {failure['error']}"
        )
    for error in outcome["errored"]:
        lines.append(f"  errored: {error['trial_id']}: {error['error']}  ({error['error_file']})")
    if outcome["unfinished"]:
        lines.append(f"  unfinished: {', '.join(outcome['unfinished'])}  (continue with --resume)")
    lines.append(
        f"report: {report}" if report else "report: none (no trial has finished or failed)"
    )
    return lines


def run_sweep(
    config: Config, address: str | None = None, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run every trial of ``config.sweep`` through Ray Tune into ``runtime.out``; write the report.

    Args:
        config: the sweep's config (``runtime.out`` is the sweep directory).
        address: a Ray cluster to join ('auto', 'HOST:PORT' or 'ray://host:10001'); None: a
            local Ray (or the one this process already runs).
        resume: restore ``<sweep>/tune`` when it holds an experiment (finished trials are not
            re-run); otherwise start afresh.
        progress: Tune's progress table and the trials' logs on the console.

    Returns:
        {"sweep_dir", "trials", "finished", "stopped_early", "errored": [{trial_id, error_file,
        error}], "unfinished", "statuses": {trial_id: status}, "report": path of report.md or None}.

    Raises:
        ResumeMismatchError: ``resume`` with a config other than the sweep's.
        ResourceError: ``address`` is unreachable, or no node can hold one trial.
        UserError: any other bad input; in every case before the sweep directory is touched.
    """
    config = absolute_paths(config)
    sweep_dir = Path(config.runtime.out)
    specs = build_trial_specs(config)
    if not specs:
        raise ConfigError(
            "sweep: no trials; set sweep.rl_lams, sweep.nas_methods, sweep.static_grid or "
            "sweep.baselines"
        )
    build_scheduler(config)  # bad scheduler settings fail before anything is written
    if address and ray.is_initialized():
        raise UserError(f"--address {address}: Ray is already initialised in this process")

    tune_dir = sweep_dir / TUNE_DIR_NAME
    restore = resume and tune.Tuner.can_restore(str(tune_dir))
    if restore:
        check_resumable(config, sweep_dir)

    # Nothing in the sweep directory is written or deleted before Ray runs, the cluster can
    # hold a trial and the data is valid (prepare_sweep checks it before its first write).
    # Without progress Ray logs only errors, so a bad input stays one line on stderr.
    level = logging.INFO if progress else logging.ERROR
    connected = start_ray(address, log_to_driver=progress, logging_level=level)
    try:
        check_trial_resources(config)
        prepare_sweep(config, sweep_dir, progress)
        if resume and not restore:
            print(f"resume: no Tune experiment to restore at {tune_dir}; starting a new one")
        elif not resume and tune_dir.exists():
            # Tune's bookkeeping of an earlier run; finished trials are still reused by run_trial.
            print(f"replacing the earlier Tune state at {tune_dir} (use --resume to continue it)")
            shutil.rmtree(tune_dir)
        if restore:
            tuner = _restore_tuner(tune_dir, config)
        else:
            tuner = build_tuner(config, sweep_dir, specs, progress)
        results = tuner.fit()
    finally:
        if connected:
            ray.shutdown()

    trial_ids = [spec.trial_id for spec in specs]
    outcome = trial_outcomes(results, sweep_dir, trial_ids)
    report_path = None
    if outcome["finished"] or outcome["diverged"]:
        report = build_sweep_report(sweep_dir)
        report_path = Path(report["paths"]["markdown"])
    for line in _summary_lines(outcome, len(outcome["statuses"]), report_path):
        print(line)
    return {
        "sweep_dir": str(sweep_dir),
        "trials": len(outcome["statuses"]),
        **outcome,
        "report": str(report_path) if report_path else None,
    }
