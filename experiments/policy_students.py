"""Phase 3 of ``train_rl``: the students the frozen policy, the references (no KD, all levels) and
the controls of ``experiments.controls`` train, in worker processes, each reused when it already
finished with this config. The sweep's RL trials build their selectors here too
(``phase3_selector``), so the policy-with-controls experiment is written once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from envs.decision_bank import DecisionBank
from experiments.controls import (
    CONTROL_PREFIX,
    POLICY_METHOD,
    ControlInputs,
    budgeted_policy_selector,
    control_runs,
    control_selector,
    policy_selector,
    static_subsets_around,
)
from experiments.policy_environment import image_regimes_of
from experiments.student_workers import StudentJob, StudentWorkerPool
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.synthetic import image_regimes
from rlpkd.distill.objective import ObjectiveTerms
from rlpkd.errors import ConfigError, DataError
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.report.decision_log import DecisionLog
from rlpkd.rundir import RunDirectory
from rlpkd.training.distill_run import StepHook
from rlpkd.training.level_selection import SCALE_RULE, LevelSelector
from rlpkd.training.regime_table_selection import RegimeTableLevels, regime_table_from_headroom
from rlpkd.training.student_phase import (
    StudentRunInputs,
    run_or_reuse_student,
    selector_from_spec,
)

__all__ = [
    "ORACLE_METHOD",
    "ORACLE_SPEC",
    "StaticPair",
    "PLACEHOLDER_PAIR",
    "oracle_selector",
    "student_runs",
    "decision_log_hook",
    "phase3_selector",
    "distil_job",
    "phase3_students",
    "static_pair_finder",
]


ORACLE_METHOD = "oracle"
"""The headroom report's oracle (``experiment.headroom_report``): each image its regime's best
static subset."""
ORACLE_SPEC = "headroom-oracle"

StaticPair = tuple[int, int]
"""The best static subsets at or below and above the policy's cost (``static_subsets_around``)."""
PLACEHOLDER_PAIR: StaticPair = (0, 15)


def student_runs(
    config: Config, policy_fraction: float, static_pair: StaticPair = PLACEHOLDER_PAIR
) -> list[tuple[str, str]]:
    """(method name, level spec) of every Phase-3 run; the policy's spec is 'policy'.

    Besides the policy: no KD, all levels, and the controls of ``experiments.controls`` at the
    policy's FLOPs (``control_runs``: every one with ``rl.budget``, the ``at_price`` ones
    without). Without a budget also the scale rule, the static baselines (the best of which at no
    more FLOPs the report names) and, with ``experiment.headroom_report``, the headroom report's
    oracle (``ORACLE_SPEC``).
    """
    runs = [(POLICY_METHOD, "policy"), ("none", "none"), ("all", "all")]
    runs += control_runs(config, policy_fraction, static_pair)
    if config.rl.budget is not None:
        return runs
    runs.append((SCALE_RULE, SCALE_RULE))
    runs += [(spec, spec) for spec in config.rl.static_baselines]
    if config.experiment.headroom_report:
        runs.append((ORACLE_METHOD, ORACLE_SPEC))
    return list(dict.fromkeys(runs))


def oracle_selector(config: Config, datasets: DetectionDatasets) -> RegimeTableLevels:
    """The oracle of ``experiment.headroom_report``: each training image distils its regime's
    best subset there.

    Raises:
        ConfigError: the report is missing or unreadable, the data has no image regimes (not an
            embedded dataset), or a regime of the training images has no subset in the report.
    """
    key = "experiment.headroom_report"
    path = Path(config.experiment.headroom_report)
    table = regime_table_from_headroom(path, key)
    try:
        regimes = image_regimes(datasets.train.annotation_file)
    except DataError as error:
        raise ConfigError(f"{key}: the oracle needs images with regimes; {error}") from None
    try:
        return RegimeTableLevels(table, regimes, name=ORACLE_METHOD)
    except ValueError as error:
        raise ConfigError(
            f"{key}: {path} does not fit this data ({error}; it has {', '.join(sorted(table))})"
        ) from None


def decision_log_hook(
    config: Config, datasets: DetectionDatasets, student_dir: RunDirectory
) -> StepHook:
    """The Phase-3 step hook that logs every decision of a run to
    ``<student_dir>/decisions.jsonl`` (a policy keeps its running gap itself: ``observe_step``)."""
    steps = config.student_schedule.epochs * (
        len(datasets.train) // config.student_schedule.batch_size
    )
    log = DecisionLog(
        student_dir.path / "decisions.jsonl",
        datasets.train.class_names,
        steps,
        image_regimes_of(datasets),
    )

    def on_step(
        step: int, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        log(step, batch, mask)

    return on_step


def phase3_selector(
    inputs: StudentRunInputs, spec: str, seed: int, weights: Path
) -> tuple[LevelSelector, bool]:
    """The level selector of a Phase-3 spec ('policy', a control spec, the oracle's or a level
    spec) and whether its decisions are logged (the policy and its controls)."""
    config = inputs.config
    logged = True  # the policy and what is derived from it or compared with it
    if spec == "policy" and config.rl.budget is not None:
        selector = budgeted_policy_selector(config, weights, seed, inputs.flops, config.rl.budget)
    elif spec == "policy":
        selector = policy_selector(config, weights, seed)
    elif spec.startswith(CONTROL_PREFIX):
        control_inputs = ControlInputs(config, inputs.flops, weights, seed, inputs.datasets)
        selector = control_selector(spec, control_inputs)
    elif spec == ORACLE_SPEC:
        selector, logged = oracle_selector(config, inputs.datasets), False
    else:
        selector = selector_from_spec(spec, inputs.flops, seed, config.data.level_thresholds)
        logged = False
    return selector, logged


def _distil(
    inputs: StudentRunInputs,
    run_dir: RunDirectory,
    method: str,
    spec: str,
    seed: int,
    weights: Path,
) -> dict[str, Any]:
    """One Phase-3 student (reused if it already finished with this config)."""
    config = inputs.config
    student_dir = RunDirectory(run_dir.path / "students" / f"{method}-seed{seed}")
    selector, logged = phase3_selector(inputs, spec, seed, weights)
    on_step = decision_log_hook(config, inputs.datasets, student_dir) if logged else None
    title = f"[phase 3] {method} seed={seed}"
    return run_or_reuse_student(inputs, selector, seed, student_dir, title, on_step, method)


def distil_job(inputs: StudentRunInputs, job: StudentJob, weights: Path) -> dict[str, Any]:
    """One Phase-3 student of ``job`` in the run directory ``inputs.config.runtime.out``
    (reused if it already finished with this config); what a student worker runs."""
    run_dir = RunDirectory(inputs.config.runtime.out)
    return _distil(inputs, run_dir, job.method, job.spec, job.seed, weights)


def _control_jobs(
    config: Config, policy_fraction: float, static_pair: StaticPair = PLACEHOLDER_PAIR
) -> list[StudentJob]:
    """Every Phase-3 student but the policy's: no KD and all levels over ``experiment.seeds``,
    the verification controls over ``experiment.control_seeds`` (empty: the same seeds)."""
    seeds = config.experiment.seeds
    control_seeds = config.experiment.control_seeds or seeds
    jobs = []
    for method, spec in student_runs(config, policy_fraction, static_pair)[1:]:
        method_seeds = seeds if spec in ("none", "all") else control_seeds
        jobs += [StudentJob(method, spec, seed) for seed in method_seeds]
    return jobs


def phase3_students(
    inputs: StudentRunInputs,
    weights: Path,
    all_flops: float,
    static_pair_of: Callable[[float], StaticPair] = lambda fraction: PLACEHOLDER_PAIR,
) -> tuple[list[dict[str, Any]], float]:
    """Train (or reuse) every Phase-3 student; returns their metrics (policy first, then
    ``_control_jobs`` order) and the policy's kd FLOPs as a fraction of all levels'.

    With ``runtime.student_workers`` > 1 the students train in worker processes, queued longest
    first so that the workers finish together: the policy's, every KD control that does not depend
    on its FLOPs, random at its FLOPs once the policy's students are done, and the no-KD students
    (no teacher: the quickest) last.
    """
    config = inputs.config
    policy_jobs = [StudentJob(POLICY_METHOD, "policy", seed) for seed in config.experiment.seeds]

    def fraction_of(policy_runs: list[dict[str, Any]]) -> float:
        return sum(r["kd_gflops"] for r in policy_runs) / len(policy_runs) * 1e9 / all_flops

    if config.runtime.student_workers <= 1:
        runs = [distil_job(inputs, job, weights) for job in policy_jobs]
        policy_fraction = fraction_of(runs)
        jobs = _control_jobs(config, policy_fraction, static_pair_of(policy_fraction))
        runs += [distil_job(inputs, job, weights) for job in jobs]
        return runs, policy_fraction

    def at_policy_flops(job: StudentJob) -> bool:
        return job.spec.startswith(("random:", CONTROL_PREFIX))

    controls = _control_jobs(config, 0.0)  # the controls' fraction: a placeholder until known
    with_kd = [job for job in controls if not at_policy_flops(job) and job.spec != "none"]
    without_kd = [job for job in controls if job.spec == "none"]
    bar = tqdm(
        total=len(policy_jobs) + len(controls),
        desc=f"phase 3 ({config.runtime.student_workers} workers)",
        unit="student",
        disable=not config.runtime.progress,
    )

    def submit(pool: StudentWorkerPool, jobs: list[StudentJob]) -> list[Future]:
        futures = pool.submit(jobs)
        for future in futures:
            future.add_done_callback(lambda _: bar.update(1))
        return futures

    try:
        with StudentWorkerPool(config, distil_job, weights) as pool:
            policy_futures = submit(pool, policy_jobs)
            with_kd_futures = submit(pool, with_kd)
            runs = [future.result() for future in policy_futures]
            policy_fraction = fraction_of(runs)
            final_jobs = _control_jobs(config, policy_fraction, static_pair_of(policy_fraction))
            dependent = [j for j in final_jobs if at_policy_flops(j)]
            dependent_futures = submit(pool, dependent)
            without_kd_futures = submit(pool, without_kd)
            done = {
                job: future.result()
                for job, future in zip(
                    with_kd + dependent + without_kd,
                    with_kd_futures + dependent_futures + without_kd_futures,
                    strict=True,
                )
            }
    finally:
        bar.close()
    runs += [done[job] for job in final_jobs]
    return runs, policy_fraction


def static_pair_finder(
    learning: dict[str, Any], flops: FlopsModel
) -> Callable[[float], StaticPair]:
    """The best static subsets around a cost, by the value of Phase 2's decision bank."""
    path = learning.get("decision_bank", {}).get("path")
    if not path:
        return lambda fraction: PLACEHOLDER_PAIR
    bank = DecisionBank.load(Path(path))
    costs = flops.subset_kd_fractions().numpy()
    return lambda fraction: static_subsets_around(bank, costs, fraction)
