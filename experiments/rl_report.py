"""Phase 4 of ``train_rl``: what its report adds to judge the policy (verification controls, the
headroom context, the planted rule's AUROC) and, at a budget, the comparison with every control
and how the policy spends differently from random samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from envs.snapshots import build_snapshot_pool
from experiments.controls import (
    POLICY_METHOD,
    control_kind,
    control_record,
)
from policies.planted_rule_score import planted_rule_score
from policies.weights import (
    module_from_weights_file,
)
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.budget_comparison import (
    budget_comparison,
    budget_report_lines,
    phase2_budget_sentence,
    value_by_progress_sentence,
)
from rlpkd.report.decision_log import read_decisions
from rlpkd.report.learning_verdict import phase2_report_lines
from rlpkd.report.tables import summarise_methods, write_report
from rlpkd.report.verification import best_static_at_or_below, subset_regime_information
from rlpkd.rundir import RunDirectory
from rlpkd.training.regime_table_selection import regime_table_from_headroom
from rlpkd.viz.heatmaps import (
    largest_differences,
    selection_differences,
    write_difference_heatmaps,
    write_heatmaps,
)

__all__ = [
    "SPENDING_REFERENCE",
    "TrainedPhases",
    "verification_controls",
    "spending_lines",
    "write_rl_report",
]


SPENDING_REFERENCE = "random-samples"
"""The control the policy's spending is drawn against (all levels on random samples)."""


def spending_lines(
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


@dataclass(frozen=True)
class TrainedPhases:
    """What phases 1-3 of ``train_rl`` made: the teacher and its metrics, Phase 2's learning
    record, the FLOPs model, every Phase-3 student's metrics (policy first) and the policy's kd
    FLOPs as a fraction of all levels'."""

    teacher: PyramidDetector
    teacher_metrics: dict[str, float]
    learning: dict[str, Any]
    flops: FlopsModel
    runs: list[dict[str, Any]]
    policy_fraction: float


def _phase_facts(config: Config, phases: TrainedPhases, wall_time_s: float) -> dict[str, Any]:
    """The report's facts about phases 1-3: Phase 2's verdict and cost, the teacher's AP, the
    policy's kd FLOPs, the run's wall time and learning curves."""
    learning, verdict = phases.learning, phases.learning["verdict"]
    return {
        "phase2_verdict": verdict["status"],
        "phase2_heldout_score": verdict["heldout_score"],
        "phase2_static_score": verdict["static_score"],
        "phase2_static_subset": verdict["static_subset"],
        "phase2_predictor_score": verdict["predictor_score"],
        "phase2_entropy": verdict["entropy"],
        "phase2_learner": learning["learner"],
        "phase2_ppo_decisions": learning["ppo_decisions"],
        "phase2_decisions_per_value_gflop": learning["decisions_per_value_gflop"],
        "teacher_AP": phases.teacher_metrics["AP"],
        "policy_kd_flops_fraction": phases.policy_fraction,
        "kd_gflops_all_levels": phases.flops.kd_flops(LEVELS) / 1e9,
        "student_train_gflops": phases.flops.student_train_flops() / 1e9,
        "policy_learning_time_s": learning["learning_time_s"],
        "policy_learning_reward": config.rl.reward,
        "policy_learning_reward_signal_gflops_per_decision": learning[
            "reward_signal_gflops_per_decision"
        ],
        "wall_time_s": wall_time_s,
        "policy_learning_curve": [h.get("episode_return_mean") for h in learning["history"]],
        "scratch_curve": learning.get("scratch_curve"),
    }


def _budget_report(
    config: Config,
    datasets: DetectionDatasets,
    run_dir: RunDirectory,
    phases: TrainedPhases,
    rows: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """With ``rl.budget``: each row's kind, the comparison with every control at the policy's
    cost, Phase 2's dual variable and value-greedy's signal cost (report fields), and the
    report's budget sentences and spending heatmaps (preamble lines)."""
    kinds = {row["method"]: control_kind(row["method"]) for row in rows}
    for row in rows:
        row["kind"] = kinds[row["method"]]
    all_gflops = phases.flops.kd_flops(LEVELS) / 1e9
    extra: dict[str, Any] = {
        "budget": budget_comparison(
            phases.runs,
            config.rl.budget,
            POLICY_METHOD,
            kinds,
            all_gflops,
            config.rl.budget_pace,
        ),
        "phase2_budget": phases.learning.get("budget", {}),
    }
    bank = phases.learning.get("decision_bank", {})
    # value-greedy probes the value signal every step: what the bank paid per decision
    extra["value_greedy_signal_gflops_per_image"] = bank.get("value_gflops", float("nan")) / max(
        bank.get("contexts", 0), 1
    )
    lines = [phase2_budget_sentence(extra["phase2_budget"]), ""] if extra["phase2_budget"] else []
    if bank.get("value_by_progress"):
        extra["value_by_progress"] = bank["value_by_progress"]
        lines += [value_by_progress_sentence(bank["value_by_progress"]), ""]
    lines += budget_report_lines(extra["budget"])
    lines += spending_lines(config, datasets, run_dir, phases.runs)
    return extra, lines


def write_rl_report(
    config: Config,
    datasets: DetectionDatasets,
    run_dir: RunDirectory,
    phases: TrainedPhases,
    wall_time_s: float,
) -> dict[str, Any]:
    """Phase 4: the policy's heatmaps, the table of methods, Phase 2's verdict, the verification
    controls and, with ``rl.budget``, the comparison with every control; writes ``report.md``,
    ``report.json`` and the policy's ``metrics.json`` and returns the report."""
    learning = phases.learning
    seed = config.experiment.seeds[0]
    writer = SummaryWriter(str(run_dir.tensorboard / "report"))
    decisions = read_decisions(
        run_dir.path / "students" / f"{POLICY_METHOD}-seed{seed}" / "decisions.jsonl"
    )
    heatmaps = write_heatmaps(decisions, datasets.train.class_names, run_dir.plots, writer)
    writer.close()
    rows = summarise_methods(phases.runs)
    weights = Path(learning["weights"])
    controls = verification_controls(config, datasets, run_dir, rows, weights, phases.teacher)
    extra = {
        **_phase_facts(config, phases, wall_time_s),
        "heatmap_counts": heatmaps,
        "phase2": {
            "verdict": learning["verdict"],
            "heldout": learning.get("heldout", {}),
            "decision_bank": learning.get("decision_bank", {}),
        },
        **controls,
    }
    preamble = phase2_report_lines(learning)
    if config.rl.budget is not None:
        budget_extra, budget_lines = _budget_report(config, datasets, run_dir, phases, rows)
        extra |= budget_extra
        preamble += budget_lines
    write_report(run_dir.path, "RL-PyramidKD: policy vs baselines", rows, extra, preamble=preamble)
    policy_row = next(r for r in rows if r["method"] == POLICY_METHOD)
    run_dir.write_metrics(
        {
            **{k.removesuffix("_mean"): v for k, v in policy_row.items() if k.endswith("_mean")},
            "student_train_gflops": extra["student_train_gflops"],
            "wall_time_s": extra["wall_time_s"],
            "method": POLICY_METHOD,
            "policy_kd_flops_fraction": phases.policy_fraction,
        }
    )
    return {"methods": rows, **extra}
