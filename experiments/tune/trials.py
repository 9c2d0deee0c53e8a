"""The trials of a sweep: what each one is (``TrialSpec``) and how it runs into its run directory.

Four kinds share one schedule, seeds and teacher, so the report compares them on equal footing:

- ``static``: one of the 16 level subsets, fixed for every sample (the exhaustive grid);
- ``baseline``: any other level spec (e.g. ``random:0.5``);
- ``nas``: a search method picks a subset on a held-out part of the training split, then the
  pick is retrained on the full schedule;
- ``rl``: PPO learns a per-sample policy at one lambda (with ``rl.budget``: at that budget, the
  trial's lambda the dual variable's start), then the frozen policy drives a student; the controls
  of ``experiments.controls`` train beside it at its measured kd FLOPs, as ``train_rl`` trains
  them (``control_runs``: at a fixed price the shuffled-mask control and random subsets, at a
  budget every control), each in ``<trial>/controls/<name>``. The metrics carry each control's
  results with its table entry's name, kind and description (``controls``), and the mutual
  information between the chosen subset and the image regime (``rlpkd.report.verification``);
  ``<trial>/plots`` holds the policy's selection heatmaps by size, class, progress and regime.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.controls import control_record, control_runs, controls_beside
from experiments.policy_learning import learn_policy
from experiments.policy_students import decision_log_hook, phase3_selector, static_pair_finder
from experiments.run_setup import check_trainable
from experiments.search_retrain import search_and_retrain
from experiments.tune.trial_placement import place_trial
from rlpkd.config import Config, save_config
from rlpkd.data.build import build_datasets
from rlpkd.errors import ConfigError, DivergenceError, divergence_in
from rlpkd.fingerprint import file_digest, fingerprint
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import LEVELS, all_subsets, format_levels
from rlpkd.report.decision_log import read_decisions
from rlpkd.report.sweep_layout import FAILED_FILE, TRIAL_KINDS, TRIAL_MANIFEST
from rlpkd.report.tables import REPORT_METRICS
from rlpkd.report.verification import subset_regime_information
from rlpkd.rundir import RunDirectory, read_json, write_json
from rlpkd.runtime import configure_runtime
from rlpkd.search.methods import search_method_names
from rlpkd.training.level_selection import parse_level_spec
from rlpkd.training.student_phase import (
    STUDENT_SECTIONS,
    StudentRunInputs,
    run_student,
    selector_from_spec,
)
from rlpkd.training.teacher_phase import (
    check_teacher_checkpoint,
    load_or_train_teacher,
    load_teacher,
)
from rlpkd.viz.heatmaps import write_heatmaps

__all__ = [
    "TRIAL_MANIFEST",
    "FAILED_FILE",
    "TrialDivergedError",
    "TrialSpec",
    "build_trial_specs",
    "absolute_paths",
    "prepare_sweep",
    "teacher_path",
    "trial_dir",
    "trial_fingerprint",
    "run_trial",
]

TrialReport = Callable[[dict[str, Any]], None]
CONTROLS_DIR = "controls"
"""``<trial>/controls/<name>``: an RL trial's control students (``experiments.controls``)."""


class TrialDivergedError(DivergenceError):
    """The DivergenceError a diverged trial raises to Tune.

    Its own type tells Tune's error files and the sweep summary that a trial diverged (picklable
    through ``DivergenceError.__reduce__``).
    """


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep.

    Attributes:
        trial_id: unique and directory-safe, e.g. 'static-P2+P3-seed0', 'darts-seed1'.
        kind: 'static' | 'baseline' | 'nas' | 'rl'.
        method: the report's row label ('P2,P3', 'random:0.5', 'darts', 'rl λ=0.1').
        seed: the student's seed (for RL also the policy-learning seed; for NAS the search's).
        levels: the level spec of static and baseline trials.
        search_method: the registered search method of NAS trials.
        lam: the FLOPs penalty of RL trials.
    """

    trial_id: str
    kind: str
    method: str
    seed: int
    levels: str = ""
    search_method: str = ""
    lam: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (Tune's param space holds these)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialSpec:
        """The inverse of ``to_dict``."""
        return cls(**values)


def _dir_safe(name: str) -> str:
    return name.replace(",", "+").replace(":", "_").replace(" ", "")


def build_trial_specs(config: Config) -> list[TrialSpec]:
    """Every trial of ``config.sweep``: RL lambdas, NAS methods, baselines and the static grid,
    each over ``sweep.seeds``, in that order (the longest trials start first)."""

    sweep = config.sweep
    known = search_method_names()
    unknown = [name for name in sweep.nas_methods if name not in known]
    if unknown:
        raise ConfigError(f"sweep.nas_methods: unknown {unknown[0]!r}; valid: {', '.join(known)}")
    specs: list[TrialSpec] = []
    budget = config.rl.budget
    for lam in sweep.rl_lams:
        # at a budget the trial's λ only starts the dual variable
        method = f"rl λ={lam:g}" if budget is None else f"rl budget={budget:g} λ₀={lam:g}"
        for seed in sweep.seeds:
            specs.append(TrialSpec(f"rl-lam{lam:g}-seed{seed}", "rl", method, seed, lam=float(lam)))
    for name in sweep.nas_methods:
        specs += [
            TrialSpec(f"{name}-seed{seed}", "nas", name, seed, search_method=name)
            for seed in sweep.seeds
        ]
    for spec in sweep.baselines:
        parse_level_spec(spec)  # validates the spec
        specs += [
            TrialSpec(f"baseline-{_dir_safe(spec)}-seed{seed}", "baseline", spec, seed, spec)
            for seed in sweep.seeds
        ]
    if sweep.static_grid:
        for subset in all_subsets():
            name = format_levels(subset)
            specs += [
                TrialSpec(f"static-{_dir_safe(name)}-seed{seed}", "static", name, seed, name)
                for seed in sweep.seeds
            ]
    ids = [spec.trial_id for spec in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"sweep: trial {duplicates[0]!r} is listed twice; remove the repeat")
    return specs


def absolute_paths(config: Config) -> Config:
    """The config with data.root, runtime.out and meta.warm_start made absolute (trials run in
    another working directory, possibly on another node of a shared filesystem)."""
    data = dataclasses.replace(config.data, root=str(Path(config.data.root).resolve()))
    for key in ("train_images", "train_annotations", "val_images", "val_annotations"):
        if getattr(data, key):
            data = dataclasses.replace(data, **{key: str(Path(getattr(data, key)).resolve())})
    runtime = dataclasses.replace(config.runtime, out=str(Path(config.runtime.out).resolve()))
    meta = config.meta
    if meta.warm_start:
        meta = dataclasses.replace(meta, warm_start=str(Path(meta.warm_start).resolve()))
    return dataclasses.replace(config, data=data, runtime=runtime, meta=meta)


def teacher_path(sweep_dir: Path) -> Path:
    """The shared teacher of a sweep: ``<sweep>/teacher/checkpoints/teacher.pt``."""
    return Path(sweep_dir) / "teacher" / "checkpoints" / "teacher.pt"


def trial_dir(sweep_dir: Path, trial_id: str) -> Path:
    """``<sweep>/trials/<trial_id>``."""
    return Path(sweep_dir) / "trials" / trial_id


def prepare_sweep(config: Config, sweep_dir: Path, progress: bool = True) -> dict[str, float]:
    """Validate the data (nothing is written if it is bad), write ``<sweep>/config.yaml`` and the
    trial manifest, and train or reuse the shared teacher. Returns the teacher's metrics."""
    datasets = build_datasets(config.data, progress)
    check_trainable(config, datasets)
    device = configure_runtime(config.runtime)
    sweep_dir = Path(sweep_dir)
    check_teacher_checkpoint(teacher_path(sweep_dir))  # a damaged shared teacher: before writes
    sweep_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, sweep_dir / "config.yaml")
    write_json(
        sweep_dir / TRIAL_MANIFEST,
        {"trial_ids": [spec.trial_id for spec in build_trial_specs(config)]},
    )
    teacher_dir = RunDirectory(sweep_dir / "teacher").prepare(config)
    _, metrics = load_or_train_teacher(config, datasets, device, teacher_dir, progress)
    write_json(teacher_dir.path / "metrics.json", {**metrics, "method": "teacher"})
    return metrics


def trial_fingerprint(spec: TrialSpec, config: Config) -> str:
    """A hash of what determines a trial's result: the spec, the config sections it reads and
    whether it trains on a GPU (not ``sweep``'s trial lists, paths or progress settings; for RL
    not ``rl.lam``, which the spec sets, and of ``meta`` only the warm start's contents)."""
    sections = [*STUDENT_SECTIONS, *{"nas": ["search"], "rl": ["rl"]}.get(spec.kind, [])]
    extra: dict[str, Any] = {"spec": spec.to_dict(), "teacher_seed": config.runtime.seed}
    extra |= {"amp": config.runtime.amp, "gpu": config.sweep.trial_gpus > 0}
    if spec.kind == "rl":
        extra["warm_start"] = file_digest(config.meta.warm_start)
        # what trains beside the policy: a new control of the table makes a new trial
        extra["controls"] = "+".join(control.name for control in controls_beside(config))
    return fingerprint(config, sections, extra, drop={"rl": ("lam", "static_baselines")})


def _count_attempt(run_dir: Path) -> int:
    path = run_dir / "attempts.json"
    attempts = read_json(path)["attempts"] + 1 if path.is_file() else 1
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"attempts": attempts})
    return attempts


def _forget_other_inputs(run_dir: RunDirectory, fingerprint: str) -> None:
    """Drop what a trial left from a run with other inputs: its metrics and its failure record
    (so a failed rerun leaves no stale result behind, and a rerun that may now succeed is not
    taken for failed) and its PPO checkpoint (students' resume files carry their own
    fingerprint); then record this run's fingerprint."""
    (run_dir.path / "metrics.json").unlink(missing_ok=True)
    (run_dir.path / FAILED_FILE).unlink(missing_ok=True)
    path = run_dir.path / "trial.json"
    if path.is_file() and read_json(path).get("trial_fingerprint") != fingerprint:
        shutil.rmtree(run_dir.checkpoints / "policy", ignore_errors=True)
    write_json(path, {"trial_fingerprint": fingerprint})


def _record_failure(
    run_dir: RunDirectory, spec: TrialSpec, error: DivergenceError, fingerprint: str, attempts: int
) -> None:
    """Write ``failed.json`` for a diverged trial (and make sure no ``metrics.json`` is left)."""
    (run_dir.path / "metrics.json").unlink(missing_ok=True)
    write_json(
        run_dir.path / FAILED_FILE,
        {
            "error": str(error),
            "phase": error.phase,
            "step": error.step,
            "term": error.term,
            "value": str(error.value),  # 'nan' / 'inf': JSON has no such numbers
            "trial_id": spec.trial_id,
            "kind": spec.kind,
            "method": spec.method,
            "seed": spec.seed,
            "lam": spec.lam,
            "trial_attempts": attempts,
            "trial_fingerprint": fingerprint,
        },
    )


def _recorded_failure(run_dir: RunDirectory, fingerprint: str) -> TrialDivergedError | None:
    """The divergence this trial already met with the same inputs (``failed.json``), if any."""
    path = run_dir.path / FAILED_FILE
    if not path.is_file():
        return None
    try:
        failure = read_json(path)
        if failure.get("trial_fingerprint") != fingerprint:
            return None
        return TrialDivergedError(
            failure["phase"], int(failure["step"]), failure["term"], float(failure["value"])
        )
    except (ValueError, KeyError, TypeError, AttributeError):  # unreadable: run the trial again
        return None


def run_trial(
    spec: TrialSpec,
    config: Config,
    sweep_dir: Path,
    report: TrialReport | None = None,
) -> dict[str, Any]:
    """Run one trial into ``trial_dir(sweep_dir, spec.trial_id)`` and return its metrics.

    A trial whose ``metrics.json`` carries the same ``trial_fingerprint`` is returned as it is,
    not retrained. RL trials call ``report`` after every PPO iteration with
    ``{'training_iteration', 'policy_return'}``; the other kinds never call it.

    The metrics say where the trial ran: ``node_id``, ``gpu_ids`` (``ray.get_gpu_ids()`` in the
    trial), ``cuda_visible_devices`` (as Ray set it; None when unset), ``device`` (what it
    trained on, ``experiments.tune.trial_placement``), ``device_note`` (why that is not Ray's
    GPU; '' when it is, also printed once as a warning) and ``trial_start_unix_s`` /
    ``trial_end_unix_s``
    (``time.time()``, comparable across the trials of one machine).

    Raises:
        TrialDivergedError: the trial diverged (a non-finite loss, gradient, reward or fitness,
            also one RLlib or Ray wrapped in another error). It is marked failed:
            ``failed.json`` holds the error line, phase, step and term, and no ``metrics.json``
            is written. A rerun with the same inputs (same fingerprint, e.g. Tune's retry or
            ``--resume``) raises the same error at once instead of training again; other inputs
            (e.g. a lower learning rate) clear the mark and run.
    """
    if spec.kind not in TRIAL_KINDS:
        raise ValueError(f"trial {spec.trial_id}: unknown kind {spec.kind!r}")
    start, start_unix_s = time.perf_counter(), time.time()
    run_dir = RunDirectory(trial_dir(sweep_dir, spec.trial_id))
    fingerprint = trial_fingerprint(spec, config)
    attempts = _count_attempt(run_dir.path)
    metrics_path = run_dir.path / "metrics.json"
    if metrics_path.is_file() and not (run_dir.path / FAILED_FILE).is_file():
        finished = read_json(metrics_path)
        if finished.get("trial_fingerprint") == fingerprint:
            return finished
    failure = _recorded_failure(run_dir, fingerprint)
    if failure is not None:
        raise failure  # deterministic: training again would diverge again
    _forget_other_inputs(run_dir, fingerprint)
    placement = place_trial(spec.trial_id, config)
    config = placement.config
    device = configure_runtime(config.runtime)
    progress = config.runtime.progress
    datasets = build_datasets(config.data, progress)
    teacher, _ = load_teacher(teacher_path(sweep_dir), config, datasets.num_classes)
    teacher = teacher.to(device)
    flops = flops_model_from_config(config, datasets.num_classes)
    inputs = StudentRunInputs(config, datasets, teacher, flops, device)
    run = _TRIAL_RUNNERS[spec.kind]
    try:
        metrics = run(_TrialRun(spec, inputs, Path(sweep_dir), run_dir, report))
    except Exception as error:
        diverged = divergence_in(error)
        if diverged is None:
            raise
        _record_failure(run_dir, spec, diverged, fingerprint, attempts)
        raise TrialDivergedError(
            diverged.phase, diverged.step, diverged.term, diverged.value
        ) from None
    metrics |= {
        "trial_id": spec.trial_id,
        "kind": spec.kind,
        "method": spec.method,
        "seed": spec.seed,
        **placement.record,
        "trial_attempts": attempts,
        "trial_wall_time_s": time.perf_counter() - start,
        "trial_start_unix_s": start_unix_s,
        "trial_end_unix_s": time.time(),
        "trial_fingerprint": fingerprint,
    }
    run_dir.write_metrics(metrics)
    return metrics


@dataclass(frozen=True)
class _TrialRun:
    """What a trial's runner reads: the trial, its student-run inputs (config, data, teacher,
    FLOPs model, device), the sweep directory, the trial's run directory and Tune's reporter."""

    spec: TrialSpec
    inputs: StudentRunInputs
    sweep_dir: Path
    run_dir: RunDirectory
    report: TrialReport | None


TrialRunner = Callable[[_TrialRun], dict[str, Any]]


def _fixed_trial(trial: _TrialRun) -> dict[str, Any]:
    spec, inputs = trial.spec, trial.inputs
    thresholds = inputs.config.data.level_thresholds
    selector = selector_from_spec(spec.levels, inputs.flops, spec.seed, thresholds)
    return run_student(inputs, selector, spec.seed, trial.run_dir)


def _nas_trial(trial: _TrialRun) -> dict[str, Any]:
    spec = trial.spec
    return search_and_retrain(trial.inputs, spec.search_method, spec.seed, trial.run_dir)


def _rl_trial(trial: _TrialRun) -> dict[str, Any]:
    spec, sweep_dir, run_dir, report = trial.spec, trial.sweep_dir, trial.run_dir, trial.report
    config = trial.inputs.config
    config = dataclasses.replace(config, rl=dataclasses.replace(config.rl, lam=float(spec.lam)))
    inputs = dataclasses.replace(trial.inputs, config=config)
    datasets = inputs.datasets
    # the policy learns from the trial's seed; runtime.seed stays the teacher's for the student
    learn_config = dataclasses.replace(
        config, runtime=dataclasses.replace(config.runtime, seed=spec.seed)
    )
    on_iteration = None
    if report is not None:

        def on_iteration(summary: dict[str, Any]) -> None:
            report(
                {
                    "training_iteration": int(summary["iteration"]),
                    "policy_return": float(summary["episode_return_mean"]),
                }
            )

    run_dir.prepare(config)
    learning = learn_policy(
        learn_config,
        run_dir,
        datasets,
        inputs.teacher,
        resume=True,
        teacher_checkpoint=teacher_path(sweep_dir),
        snapshot_dir=Path(sweep_dir) / "shared" / "snapshots",
        on_iteration=on_iteration,
    )
    write_json(run_dir.path / "policy_learning.json", learning)
    weights = Path(learning["weights"])
    selector, _ = phase3_selector(inputs, "policy", spec.seed, weights)
    on_step = decision_log_hook(config, datasets, run_dir)
    metrics = run_student(inputs, selector, spec.seed, run_dir, on_step)
    fraction = metrics["kd_gflops"] * 1e9 / inputs.flops.kd_flops(LEVELS)
    controls = _trial_controls(inputs, run_dir, spec.seed, weights, fraction, learning)
    decisions = read_decisions(run_dir.path / "decisions.jsonl")
    write_heatmaps(decisions, datasets.train.class_names, run_dir.plots)
    policy_mi = subset_regime_information(decisions)
    return metrics | {
        "levels": "rl-policy",
        "lam": float(spec.lam),
        "budget": config.rl.budget,
        "policy_learning_time_s": learning["learning_time_s"],
        "policy_kd_flops_fraction": fraction,
        "policy_iterations": len(learning["history"]),
        "controls": controls,
        "subset_regime_mi_bits": policy_mi["mutual_information_bits"],
    }


def _trial_controls(
    inputs: StudentRunInputs,
    run_dir: RunDirectory,
    seed: int,
    weights: Path,
    fraction: float,
    learning: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Train every control of ``experiments.controls.control_runs`` at the policy's cost
    ``fraction``, each in ``<trial>/controls/<name>``; returns {name: its metrics, method,
    ``control_record`` fields and, when its decisions are logged, I(subset; regime)}."""
    config = inputs.config
    static_pair = static_pair_finder(learning, inputs.flops)(fraction)
    controls = {}
    for method, control_spec_text in control_runs(config, fraction, static_pair):
        record = control_record(method)
        control_dir = RunDirectory(run_dir.path / CONTROLS_DIR / record["control"])
        selector, logged = phase3_selector(inputs, control_spec_text, seed, weights)
        hook = decision_log_hook(config, inputs.datasets, control_dir) if logged else None
        result = run_student(inputs, selector, seed, control_dir, hook)
        entry = {metric: result.get(metric) for metric in REPORT_METRICS}
        entry |= {"method": method, **record}
        decisions = control_dir.path / "decisions.jsonl"
        if logged and decisions.is_file():
            information = subset_regime_information(read_decisions(decisions))
            entry["subset_regime_mi_bits"] = information["mutual_information_bits"]
        controls[record["control"]] = entry
    return controls


_TRIAL_RUNNERS: dict[str, TrialRunner] = {
    "static": _fixed_trial,
    "baseline": _fixed_trial,
    "nas": _nas_trial,
    "rl": _rl_trial,
}
