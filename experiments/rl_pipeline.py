"""`train_rl`: the whole pipeline for one configuration (DESIGN §1).

Phase 0 data -> Phase 1 teacher -> Phase 2 policy learning (PPO on the per-sample level-selection
env, optionally warm-started) -> Phase 3 policy-guided distillation of fresh students (the frozen
policy picks levels per sample, the lazy teacher computes only those) and the baselines on the
same schedule and seeds -> Phase 4 evaluation, heatmaps and report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from envs.decision_bank import DecisionBank
from envs.observation import observation_dim
from envs.snapshots import build_snapshot_pool, check_snapshot_files
from experiments.controls import (
    CONTROL_PREFIX,
    POLICY_METHOD,
    ControlInputs,
    budgeted_policy_selector,
    control_kind,
    control_record,
    control_runs,
    control_selector,
    policy_selector,
    static_subsets_around,
)
from experiments.policy_learning import (
    check_decision_bank,
    image_regimes_of,
    learn_policy,
    policy_fingerprint,
)
from experiments.student_workers import StudentJob, StudentWorkerPool
from policies.planted_rule_score import planted_rule_score
from policies.ppo_setup import latest_checkpoint
from policies.weights import (
    module_from_weights_file,
    read_weights_file,
)
from rlpkd.config import Config, config_from_dict, config_to_dict
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.data.synthetic import image_regimes
from rlpkd.distill.objective import ObjectiveTerms
from rlpkd.errors import CheckpointError, ConfigError, DataError, ResumeMismatchError
from rlpkd.fingerprint import DATA_LOCATION_KEYS
from rlpkd.flops.kd_flops import FlopsModel, flops_model_from_config
from rlpkd.levels import LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.budget_comparison import (
    budget_comparison,
    budget_report_lines,
    phase2_budget_sentence,
)
from rlpkd.report.decision_log import DecisionLog, read_decisions
from rlpkd.report.learning_verdict import phase2_report_lines
from rlpkd.report.tables import summarise_methods, write_report
from rlpkd.report.verification import best_static_at_or_below, subset_regime_information
from rlpkd.rundir import RunDirectory
from rlpkd.runtime import configure_runtime
from rlpkd.training.distill_run import StepHook
from rlpkd.training.level_selection import SCALE_RULE, LevelSelector
from rlpkd.training.regime_table_selection import RegimeTableLevels, regime_table_from_headroom
from rlpkd.training.student_phase import (
    StudentRunInputs,
    run_or_reuse_student,
    selector_from_spec,
)
from rlpkd.training.teacher_phase import check_teacher_checkpoint, load_or_train_teacher
from rlpkd.viz.heatmaps import (
    largest_differences,
    selection_differences,
    write_difference_heatmaps,
    write_heatmaps,
)

__all__ = [
    "POLICY_METHOD",
    "RESUME_IGNORED_KEYS",
    "distil_job",
    "resume_keys",
    "check_resume",
    "check_inputs_and_checkpoints",
    "policy_selector",
    "decision_log_hook",
    "run_rl_experiment",
]

ORACLE_METHOD = "oracle"
"""The headroom report's oracle (``experiment.headroom_report``): each image its regime's best
static subset."""
ORACLE_SPEC = "headroom-oracle"
RESUME_IGNORED_KEYS = tuple(f"data.{key}" for key in DATA_LOCATION_KEYS)
"""Keys of the fingerprinted sections that ``--resume`` may change (they do not change results)."""
RESUME_SECTIONS = ("data", "teacher", "student", "teacher_schedule", "student_schedule")
RESUME_SECTIONS += ("distill", "eval", "rl")
"""Config sections that a train_rl artifact's fingerprint covers (with meta.warm_start and
runtime.seed); experiment.seeds, experiment.control_seeds and rl.static_baselines only choose
which students run."""


def _phase(name: str) -> None:
    print(f"\n=== {name} ===", flush=True)


def resume_keys(config: Config) -> dict[str, Any]:
    """{dotted key: value} of every setting a train_rl artifact's fingerprint covers (teacher,
    snapshots, PPO policy, students), less ``RESUME_IGNORED_KEYS``."""
    flat = {
        f"{name}.{key}": value
        for name in RESUME_SECTIONS
        for key, value in config_to_dict(getattr(config, name)).items()
    }
    flat |= {"meta.warm_start": config.meta.warm_start, "runtime.seed": config.runtime.seed}
    flat.pop("rl.static_baselines")
    return {key: value for key, value in flat.items() if key not in RESUME_IGNORED_KEYS}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _recorded_config(path: Path) -> Config:
    """The config a run recorded in ``config.yaml`` (types checked, values as recorded)."""
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ResumeMismatchError(
            f"--resume: cannot read {path} ({first_line}); rerun without --resume"
        ) from None
    try:
        return config_from_dict(values, str(path))
    except ConfigError as error:
        raise ResumeMismatchError(f"--resume: {error}; rerun without --resume") from None


def check_resume(config: Config, out: Path | None = None) -> None:
    """Stop a ``--resume`` whose config differs from the run's where it matters.

    Compares ``resume_keys`` of ``config`` with those of ``<out>/config.yaml`` and the PPO
    checkpoint's fingerprint with ``policy_fingerprint(config)`` (which also covers the warm
    start's contents). Reads only; a run directory without ``config.yaml`` passes.

    Raises:
        ResumeMismatchError: one line naming every changed key as ``key old -> new``.
    """
    out = Path(config.runtime.out if out is None else out)
    recorded_path = out / "config.yaml"
    if not recorded_path.is_file():
        return
    before = resume_keys(_recorded_config(recorded_path))
    after = resume_keys(config)
    changed = [
        f"{key} {_shown(before.get(key))} -> {_shown(after.get(key))}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]
    if not changed:
        changed = _policy_inputs_changed(config, out)
    if changed:
        raise ResumeMismatchError(
            f"--resume: {out} was started with another config: {', '.join(changed)}; rerun "
            "without --resume to redo the affected phases, or use another --out"
        )


def _policy_inputs_changed(config: Config, out: Path) -> list[str]:
    """What differs from the inputs of the run's PPO checkpoint when no config key does."""
    progress_path = out / "checkpoints" / "policy" / "progress.json"
    try:
        recorded = json.loads(progress_path.read_text()).get("fingerprint", "")
    except (OSError, ValueError, AttributeError):
        return []  # no checkpoint (or an unreadable one: Phase 2 reports it)
    # with equal keys only the warm start's bytes can differ; a record from an older version
    # (no or another fingerprint) is not an error: Phase 2 starts over and says so
    if config.meta.warm_start and recorded and recorded != policy_fingerprint(config):
        return [f"the contents of meta.warm_start {config.meta.warm_start!r} changed"]
    return []


def check_inputs_and_checkpoints(
    config: Config, run_dir: RunDirectory, resume: bool, num_classes: int
) -> None:
    """Read, before anything is written, every file the run will load: the warm start, and the
    teacher, snapshot pool, decision bank and PPO progress record an earlier run left in
    ``run_dir``.

    Raises:
        CheckpointError: one of them is missing (the warm start), truncated or foreign; or the
            warm start was made for another observation size or ``rl.hidden_sizes``.
    """

    if config.meta.warm_start:
        warm = read_weights_file(Path(config.meta.warm_start))
        obs_dim = observation_dim(num_classes)
        if (
            warm.obs_dim != obs_dim
            or list(warm.hidden_sizes) != list(config.rl.hidden_sizes)
            or warm.policy_head != config.rl.policy_head
        ):
            raise CheckpointError(
                f"meta.warm_start {config.meta.warm_start} holds a policy for {warm.obs_dim} "
                f"observations, hidden sizes {warm.hidden_sizes} and a {warm.policy_head} head; "
                f"this run's has {obs_dim}, {list(config.rl.hidden_sizes)} (rl.hidden_sizes) "
                f"and {config.rl.policy_head} (rl.policy_head)"
            )
    check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")
    check_snapshot_files(config, run_dir.checkpoints / "snapshots")
    check_decision_bank(
        config, run_dir.checkpoints / "teacher.pt", run_dir.checkpoints / "snapshots"
    )
    if resume:
        latest_checkpoint(run_dir.checkpoints / "policy")


StaticPair = tuple[int, int]
"""The best static subsets at or below and above the policy's cost (``static_subsets_around``)."""
PLACEHOLDER_PAIR: StaticPair = (0, 15)


def _student_runs(
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
    for method, spec in _student_runs(config, policy_fraction, static_pair)[1:]:
        method_seeds = seeds if spec in ("none", "all") else control_seeds
        jobs += [StudentJob(method, spec, seed) for seed in method_seeds]
    return jobs


def _phase3_students(
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


SPENDING_REFERENCE = "random-samples"
"""The control the policy's spending is drawn against (all levels on random samples)."""


def _spending_lines(
    config: Config, datasets: DetectionDatasets, run_dir: RunDirectory, runs: list[dict[str, Any]]
) -> list[str]:
    """How the policy spends the budget differently from random samples at its cost (first
    seed's decision logs): the heatmaps of the difference in selection rate by size, class,
    training progress and regime (``plots/selection_vs_random-samples_by_*.png``), and the
    largest differences as a sentence."""
    seed = config.experiment.seeds[0]
    reference = next(
        (r["method"] for r in runs if r["method"].startswith(f"{SPENDING_REFERENCE}@")), None
    )
    students = run_dir.path / "students"
    policy_log = students / f"{POLICY_METHOD}-seed{seed}" / "decisions.jsonl"
    reference_log = students / f"{reference}-seed{seed}" / "decisions.jsonl"
    if reference is None or not policy_log.is_file() or not reference_log.is_file():
        return []
    names = datasets.train.class_names
    differences = selection_differences(
        read_decisions(policy_log), read_decisions(reference_log), names
    )
    write_difference_heatmaps(differences, reference, run_dir.plots)
    largest = largest_differences(differences)
    text = "; ".join(
        f"{level} at {table} {column}: {value:+.2f}" for table, column, level, value in largest
    )
    return [
        f"How the policy spends the budget differently from `{reference}` (seed {seed}, "
        f"selection rate policy − random, largest first): {text or 'no difference'}. Heatmaps: "
        "`plots/selection_vs_random-samples_by_{size,class,progress,regime}.png`.",
        "",
    ]


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


def _headroom_context(path: Path) -> dict[str, Any]:
    """What the report keeps of the headroom report whose oracle Phase 3 trained: its path, the
    oracle's table, and the headroom run's own teacher AP and oracle finding (its numbers, with
    its teacher and seeds)."""
    report = json.loads(path.read_text())
    table = regime_table_from_headroom(path)
    context: dict[str, Any] = {
        "headroom_report": str(path),
        "oracle_table": "; ".join(f"{r}={','.join(v) or 'none'}" for r, v in table.items()),
    }
    teacher_ap = report.get("teacher", {}).get("AP")
    if teacher_ap is not None:
        context["headroom_teacher_AP"] = teacher_ap
    difference = report.get("comparison", {}).get("oracle_minus_best_static")
    if isinstance(difference, dict):
        context["headroom_oracle_minus_best_static"] = difference
    return context


def verification_controls(
    config: Config,
    datasets: DetectionDatasets,
    run_dir: RunDirectory,
    rows: list[dict[str, Any]],
    weights: Path,
    teacher: PyramidDetector,
) -> dict[str, Any]:
    """What the report adds to judge the policy (``rlpkd.report.verification``): the best static
    subset at no more KD FLOPs than the policy, the mutual information between the chosen subset
    and the image regime (policy and shuffled control, seed 0's decisions), with a headroom report
    its path, oracle table and own finding (the oracle's students are rows of the table) and,
    with a planted rule, the policy's AUROC against it (``policies.planted_rule_score``)."""
    seed = config.experiment.seeds[0]
    policy_row = next(row for row in rows if row["method"] == POLICY_METHOD)
    statics = ["none", "all", *config.rl.static_baselines]
    best = best_static_at_or_below(rows, statics, policy_row["kd_gflops_mean"])
    result: dict[str, Any] = {
        "best_static_at_policy_flops": best["method"] if best is not None else "",
        "static_methods_compared": statics,
    }
    shuffled = [
        r["method"] for r in rows if control_record(r["method"]).get("control") == "shuffled"
    ]
    for method, key in ((POLICY_METHOD, "policy"), *((m, "shuffled") for m in shuffled[:1])):
        path = run_dir.path / "students" / f"{method}-seed{seed}" / "decisions.jsonl"
        if path.is_file():
            information = subset_regime_information(read_decisions(path))
            result[f"{key}_subset_regime_information"] = information
            result[f"{key}_subset_regime_mi_bits"] = information["mutual_information_bits"]
    if config.experiment.headroom_report:
        result.update(_headroom_context(Path(config.experiment.headroom_report)))
    if config.distill.planted_class >= 0:
        snapshots = build_snapshot_pool(
            config, datasets, teacher, run_dir.checkpoints / "snapshots"
        )
        device = next(teacher.parameters()).device
        module = module_from_weights_file(weights)
        score = planted_rule_score(config, datasets, module, snapshots, device)
        result["planted_rule"] = score.to_dict()
        result["planted_rule_auroc"] = score.auroc_planted_levels
        result["planted_rule_auroc_within_level"] = score.auroc_within_level
    return result


def run_rl_experiment(config: Config, resume: bool = False) -> dict[str, Any]:
    """Run phases 0-4 into ``config.runtime.out``; returns the report.

    Every phase reuses what an earlier run left when its fingerprint matches (teacher, snapshot
    pool, students) and redoes it otherwise; PPO continues its checkpoint only with ``resume``.

    Raises:
        ResumeMismatchError: ``resume`` with a config that differs from the run's where it
            matters (``check_resume``); nothing is written.
        CheckpointError: a file the run would load is truncated or foreign
            (``check_inputs_and_checkpoints``); nothing is written.
    """
    start = time.perf_counter()
    progress = config.runtime.progress
    if resume:
        check_resume(config)
    device = configure_runtime(config.runtime)
    _phase("Phase 0: data")
    datasets = build_datasets(config.data, progress)  # validates before anything is written
    run_dir = RunDirectory(config.runtime.out)
    check_inputs_and_checkpoints(config, run_dir, resume, datasets.num_classes)
    if config.experiment.headroom_report:
        oracle_selector(config, datasets)  # a report that does not fit: before any write
    # config.yaml is written only now: the config is final, validated and fits the run
    run_dir.prepare(config)
    writer = SummaryWriter(str(run_dir.tensorboard / "report"))

    _phase("Phase 1: teacher")
    teacher, teacher_metrics = load_or_train_teacher(config, datasets, device, run_dir, progress)
    print(f"teacher val AP = {100 * teacher_metrics['AP']:.1f}")
    flops = flops_model_from_config(config, datasets.num_classes)

    _phase("Phase 2: policy learning (PPO)")
    learning = learn_policy(config, run_dir, datasets, teacher, resume)
    weights = Path(learning["weights"])

    _phase("Phase 3: policy-guided distillation and baselines")
    inputs = StudentRunInputs(config, datasets, teacher, flops, device)
    seeds = config.experiment.seeds
    all_flops = flops.kd_flops(LEVELS)
    runs, policy_fraction = _phase3_students(
        inputs, weights, all_flops, static_pair_finder(learning, flops)
    )

    _phase("Phase 4: report")
    decisions = read_decisions(
        run_dir.path / "students" / f"{POLICY_METHOD}-seed{seeds[0]}" / "decisions.jsonl"
    )
    heatmaps = write_heatmaps(decisions, datasets.train.class_names, run_dir.plots, writer)
    writer.close()
    rows = summarise_methods(runs)
    controls = verification_controls(config, datasets, run_dir, rows, weights, teacher)
    verdict = learning["verdict"]
    extra = {
        "phase2_verdict": verdict["status"],
        "phase2_heldout_score": verdict["heldout_score"],
        "phase2_static_score": verdict["static_score"],
        "phase2_static_subset": verdict["static_subset"],
        "phase2_predictor_score": verdict["predictor_score"],
        "phase2_entropy": verdict["entropy"],
        "phase2_learner": learning["learner"],
        "phase2_ppo_decisions": learning["ppo_decisions"],
        "phase2_decisions_per_value_gflop": learning["decisions_per_value_gflop"],
        "teacher_AP": teacher_metrics["AP"],
        "policy_kd_flops_fraction": policy_fraction,
        "kd_gflops_all_levels": all_flops / 1e9,
        "student_train_gflops": flops.student_train_flops() / 1e9,
        "policy_learning_time_s": learning["learning_time_s"],
        "policy_learning_reward": config.rl.reward,
        "policy_learning_reward_signal_gflops_per_decision": learning[
            "reward_signal_gflops_per_decision"
        ],
        "wall_time_s": time.perf_counter() - start,
        "policy_learning_curve": [h.get("episode_return_mean") for h in learning["history"]],
        "scratch_curve": learning.get("scratch_curve"),
        "heatmap_counts": heatmaps,
        "phase2": {
            "verdict": verdict,
            "heldout": learning.get("heldout", {}),
            "decision_bank": learning.get("decision_bank", {}),
        },
        **controls,
    }
    preamble = phase2_report_lines(learning)
    if config.rl.budget is not None:
        kinds = {row["method"]: control_kind(row["method"]) for row in rows}
        for row in rows:
            row["kind"] = kinds[row["method"]]
        extra["budget"] = budget_comparison(
            runs, config.rl.budget, POLICY_METHOD, kinds, all_flops / 1e9
        )
        extra["phase2_budget"] = learning.get("budget", {})
        bank = learning.get("decision_bank", {})
        # value-greedy probes the value signal every step: what the bank paid per decision
        extra["value_greedy_signal_gflops_per_image"] = bank.get(
            "value_gflops", float("nan")
        ) / max(bank.get("contexts", 0), 1)
        if extra["phase2_budget"]:
            preamble += [phase2_budget_sentence(extra["phase2_budget"]), ""]
        preamble += budget_report_lines(extra["budget"])
        preamble += _spending_lines(config, datasets, run_dir, runs)
    write_report(
        run_dir.path,
        "RL-PyramidKD: policy vs baselines",
        rows,
        extra,
        preamble=preamble,
    )
    policy_row = next(r for r in rows if r["method"] == POLICY_METHOD)
    run_dir.write_metrics(
        {
            **{k.removesuffix("_mean"): v for k, v in policy_row.items() if k.endswith("_mean")},
            "student_train_gflops": extra["student_train_gflops"],
            "wall_time_s": extra["wall_time_s"],
            "method": POLICY_METHOD,
            "policy_kd_flops_fraction": policy_fraction,
        }
    )
    return {"methods": rows, **extra}
