"""The planted-rule experiment: PPO per reward and seed on a config with a planted rule, scored.

See ``policies.planted_rule_score`` for the score and ``rlpkd.distill.planted`` for the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.rewards import REWARDS
from envs.snapshots import build_snapshot_pool
from experiments.policy_learning import learn_variant_policy
from experiments.run_setup import open_run_with_teacher
from policies.planted_rule_score import planted_credit_auroc, planted_rule_score
from policies.weights import module_from_weights_file
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config, config_from_dict, config_to_dict
from rlpkd.data.build import DetectionDatasets
from rlpkd.errors import ConfigError
from rlpkd.models.detector import PyramidDetector
from rlpkd.rundir import RunDirectory, write_json

__all__ = ["run_planted_experiment", "planted_rule_markdown"]

_SUMMARY_KEYS = (  # the per-run scores averaged over seeds in the summary
    "auroc_planted_levels",
    "auroc_within_level",
    "auroc_all_pairs",
    "selection_planted",
    "selection_clean_same_levels",
    "selection_other_levels",
)


def _variant(config: Config, reward: str, seed: int, out: Path) -> Config:
    """``config`` with ``rl.reward`` and the seed set, writing under ``out``."""
    values = config_to_dict(config)
    values["rl"]["reward"] = reward
    if not REWARDS.get(reward).full_information:
        values["rl"]["learner"] = "live"  # the bank needs the reward of every subset
    values["runtime"]["seed"] = seed
    values["runtime"]["out"] = str(out)
    return config_from_dict(values, f"planted-rule variant reward={reward} seed={seed}")


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(array)}


def _learn_and_score_variant(
    config: Config,
    reward: str,
    seed: int,
    run_dir: RunDirectory,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    teacher_checkpoint: Path,
    pool: list[Path],
    snapshot_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    """PPO for one (reward, seed) into ``<out>/<reward>-seed<seed>``, scored on ``pool``; its
    run record."""
    variant_dir = RunDirectory(run_dir.path / f"{reward}-seed{seed}")
    variant = _variant(config, reward, seed, variant_dir.path)
    print(f"[planted rule] reward={reward} seed={seed}: PPO", flush=True)
    learning = learn_variant_policy(
        variant, variant_dir, datasets, teacher, teacher_checkpoint, snapshot_dir
    )
    module = module_from_weights_file(Path(learning["weights"]))
    score = planted_rule_score(variant, datasets, module, pool, device)
    print(
        f"[planted rule] reward={reward} seed={seed}: AUROC "
        f"{score.auroc_planted_levels:.3f} at the planted levels, "
        f"{score.auroc_within_level:.3f} within level",
        flush=True,
    )
    return {
        "reward": reward,
        "seed": seed,
        "learning_time_s": learning["learning_time_s"],
        **score.to_dict(),
    }


def _summary_by_reward(
    runs: list[dict[str, Any]], rewards: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per reward, mean ± std over its seeds of each score in ``_SUMMARY_KEYS``."""
    return {
        reward: {
            key: _mean_std([r[key] for r in runs if r["reward"] == reward]) for key in _SUMMARY_KEYS
        }
        for reward in rewards
    }


def run_planted_experiment(
    config: Config,
    rewards: list[str],
    seeds: list[int],
    teacher_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Learn a policy per (reward, seed) on ``config`` (which must plant a rule) and score each.

    Phase 1 (the teacher) is trained once into ``<out>`` unless ``teacher_checkpoint`` is given;
    Phase 2 (snapshot pool per seed, shared by the rewards; PPO) runs per variant into
    ``<out>/<reward>-seed<seed>``; each policy is scored by ``planted_rule_score`` on the val
    images seen by every snapshot of its pool. Writes ``<out>/planted_rule.json`` and
    ``planted_rule.md`` and returns the record.
    """
    if config.distill.planted_class < 0:
        raise ConfigError("the planted-rule experiment needs distill.planted_class >= 0")
    opened, teacher, teacher_checkpoint = open_run_with_teacher(config, teacher_checkpoint)
    device, datasets, run_dir = opened.device, opened.datasets, opened.run_dir
    runs: list[dict[str, Any]] = []
    credit: dict[str, dict[str, float]] = {}
    snapshot_dir = run_dir.checkpoints / "snapshots"
    for seed in seeds:
        # the pool depends on the seed, not on the reward: one per seed, shared by the rewards
        seed_config = _variant(config, rewards[0], seed, run_dir.path)
        pool = build_snapshot_pool(seed_config, datasets, teacher, snapshot_dir)
        credit[str(seed)] = planted_credit_auroc(seed_config, datasets, teacher, pool, device)
        print(f"[planted rule] seed={seed}: credit AUROC {credit[str(seed)]}", flush=True)
        for reward in rewards:
            runs.append(
                _learn_and_score_variant(
                    config,
                    reward,
                    seed,
                    run_dir,
                    datasets,
                    teacher,
                    teacher_checkpoint,
                    pool,
                    snapshot_dir,
                    device,
                )
            )
            write_json(run_dir.path / "planted_rule.json", {"runs": runs, "credit": credit})
    record = {
        "planted_class": config.distill.planted_class,
        "planted_class_name": datasets.train.class_names[config.distill.planted_class],
        "planted_levels": list(config.distill.planted_levels),
        "planted_corruption": config.distill.planted_corruption,
        "policy_head": config.rl.policy_head,
        "runs": runs,
        "summary": _summary_by_reward(runs, rewards),
        "credit_auroc": credit,
    }
    write_json(run_dir.path / "planted_rule.json", record)
    atomic_write_text(run_dir.path / "planted_rule.md", planted_rule_markdown(record))
    return record


def planted_rule_markdown(record: dict[str, Any]) -> str:
    """The planted-rule experiment as a short markdown report."""
    levels = ", ".join(record["planted_levels"])
    lines = [
        "# Planted rule: does the policy learn which pairs not to distil?",
        "",
        f"Teacher targets at {levels} are corrupted ({record.get('planted_corruption', 'rotate')})"
        " on every image holding a "
        f"`{record['planted_class_name']}` (class {record['planted_class']}). Scored on held-out "
        "decisions (val images, every snapshot student): AUROC of 1 − P(level selected) against "
        "the planted labels; 0.5 is chance, a static policy scores 0.5. *Planted levels*: the "
        "pairs at those levels pooled; *within level*: the mean of the per-level AUROCs (each "
        "level's images ranked among themselves, so the level mix does not count).",
        "",
        "| reward | seeds | AUROC planted levels | AUROC within level | AUROC all pairs | "
        "P(sel) planted | P(sel) clean, same levels | P(sel) other levels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for reward, summary in record["summary"].items():

        def cell(key: str, summary: dict = summary) -> str:
            return f"{summary[key]['mean']:.3f} ± {summary[key]['std']:.3f}"

        lines.append(
            f"| {reward} | {summary['auroc_planted_levels']['n']} | "
            f"{cell('auroc_planted_levels')} | {cell('auroc_within_level')} | "
            f"{cell('auroc_all_pairs')} | "
            f"{cell('selection_planted')} | {cell('selection_clean_same_levels')} | "
            f"{cell('selection_other_levels')} |"
        )
    credit = record.get("credit_auroc", {})
    if credit:
        lines += [
            "",
            "Credit ceiling: AUROC of −v_il (one decision's value signal) against the same labels, "
            "per snapshot and pooled: "
            + "; ".join(
                f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                for seed, values in credit.items()
            ),
        ]
    lines += ["", "| reward | seed | AUROC planted levels | per level | learning time (s) |"]
    lines += ["|---|---|---|---|---|"]
    for run in record["runs"]:
        per_level = ", ".join(f"{k} {v:.3f}" for k, v in run["auroc_per_level"].items())
        lines.append(
            f"| {run['reward']} | {run['seed']} | {run['auroc_planted_levels']:.3f} | "
            f"{per_level} | {run['learning_time_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
