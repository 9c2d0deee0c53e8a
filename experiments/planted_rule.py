"""Did the policy find the planted rule? AUROC of its level choices on held-out decisions.

With ``distill.planted_class`` set, the teacher's targets at ``distill.planted_levels`` are
corrupted on every image holding that class (``rlpkd.distill.planted``), so the right per-sample
rule is "do not distil those levels on those images". On held-out decisions (val images, which the
policy never trained on, observed by each snapshot student of the pool), the policy's marginal
``P(level l selected | s)`` is scored against the planted "do not distil" labels by AUROC, with
``1 − P(l selected | s)`` as the score: 1.0 means every planted pair is less likely to be
distilled than every clean one, 0.5 is no better than chance (a static policy scores 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.snapshots import build_snapshot_pool, load_snapshot
from experiments.rl_pipeline import learn_policy
from policies.level_policy_module import LevelSelectionModule
from policies.level_probabilities import level_selection_probabilities
from policies.policy_selector import PolicyLevels
from policies.weights import module_from_weights_file
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config, config_from_dict, config_to_dict
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.planted import planted_pairs
from rlpkd.errors import ConfigError
from rlpkd.levels import LEVELS
from rlpkd.report.auroc import auroc
from rlpkd.rundir import RunDirectory, write_json
from rlpkd.runtime import configure_runtime
from rlpkd.training.teacher_phase import load_or_train_teacher, load_teacher

__all__ = [
    "PlantedRuleScore",
    "planted_rule_score",
    "run_planted_experiment",
    "planted_rule_markdown",
]


@dataclass
class PlantedRuleScore:
    """How well a policy's level choices follow the planted rule on held-out decisions.

    Attributes:
        auroc_planted_levels: AUROC of ``1 − P(l selected)`` against the planted labels over the
            (sample, level) pairs at the planted levels: does the policy tell the images to skip?
        auroc_all_pairs: the same over all four levels of every sample.
        auroc_per_level: level -> AUROC over the samples at that level (planted levels only).
        selection_planted: mean ``P(l selected)`` over the planted pairs.
        selection_clean_same_levels: mean ``P(l selected)`` at the planted levels on clean images.
        selection_other_levels: mean ``P(l selected)`` at the other levels.
        decisions: held-out decisions scored (samples × snapshots).
        planted_share: share of those samples holding the planted class.
    """

    auroc_planted_levels: float
    auroc_all_pairs: float
    auroc_per_level: dict[str, float]
    selection_planted: float
    selection_clean_same_levels: float
    selection_other_levels: float
    decisions: int
    planted_share: float

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def planted_rule_score(
    config: Config,
    datasets: DetectionDatasets,
    module: LevelSelectionModule,
    snapshots: list[Path],
    device: torch.device | str = "cpu",
    batch_size: int = 50,
) -> PlantedRuleScore:
    """Score ``module`` on every val image, observed by every student of ``snapshots``.

    Raises:
        ConfigError: ``config`` has no planted rule (``distill.planted_class`` is -1).
    """
    settings = config.distill
    if settings.planted_class < 0:
        raise ConfigError("planted_rule_score needs distill.planted_class >= 0 (a planted rule)")
    planted_levels = tuple(settings.planted_levels)
    on_planted = torch.tensor([level in planted_levels for level in LEVELS])
    loader = build_dataloader(datasets.val, batch_size, shuffle=False, seed=0)
    probabilities, labels = [], []
    for path in snapshots:
        state = load_snapshot(path, config, datasets.num_classes, torch.device(device))
        selector = PolicyLevels(
            module,
            config.data.level_thresholds,
            student=state.student,
            running_gap=state.running_gap,
        )
        for batch in loader:
            batch = batch.to(device)
            obs = selector.observations(batch, state.progress)
            probabilities.append(level_selection_probabilities(module, obs))
            labels.append(planted_pairs(batch.labels, settings.planted_class, planted_levels).cpu())
    selected = torch.cat(probabilities)
    planted = torch.cat(labels)
    skip_score = 1.0 - selected
    clean_same = ~planted & on_planted[None, :]
    return PlantedRuleScore(
        auroc_planted_levels=auroc(skip_score[:, on_planted], planted[:, on_planted]),
        auroc_all_pairs=auroc(skip_score, planted),
        auroc_per_level={
            level: auroc(skip_score[:, i], planted[:, i])
            for i, level in enumerate(LEVELS)
            if level in planted_levels
        },
        selection_planted=float(selected[planted].mean()),
        selection_clean_same_levels=float(selected[clean_same].mean()),
        selection_other_levels=float(selected[:, ~on_planted].mean())
        if bool((~on_planted).any())
        else float("nan"),
        decisions=len(selected),
        planted_share=float(planted.any(dim=1).float().mean()),
    )


def _variant(config: Config, reward: str, seed: int, out: Path) -> Config:
    """``config`` with ``rl.reward`` and the seed set, writing under ``out``."""
    values = config_to_dict(config)
    values["rl"]["reward"] = reward
    values["runtime"]["seed"] = seed
    values["runtime"]["out"] = str(out)
    return config_from_dict(values, f"planted-rule variant reward={reward} seed={seed}")


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(array)}


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
    progress = config.runtime.progress
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, progress)
    run_dir = RunDirectory(config.runtime.out)
    run_dir.prepare(config)
    if teacher_checkpoint is None:
        teacher, _ = load_or_train_teacher(config, datasets, device, run_dir, progress)
        teacher_checkpoint = run_dir.checkpoints / "teacher.pt"
    else:
        teacher, _ = load_teacher(teacher_checkpoint, config, datasets.num_classes)
        teacher = teacher.to(device)
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for reward in rewards:
            variant_dir = RunDirectory(run_dir.path / f"{reward}-seed{seed}")
            variant = _variant(config, reward, seed, variant_dir.path)
            variant_dir.prepare(variant)
            snapshot_dir = run_dir.checkpoints / "snapshots"
            print(f"[planted rule] reward={reward} seed={seed}: PPO", flush=True)
            learning = learn_policy(
                variant,
                variant_dir,
                datasets,
                teacher,
                resume=False,
                teacher_checkpoint=teacher_checkpoint,
                snapshot_dir=snapshot_dir,
            )
            snapshots = build_snapshot_pool(variant, datasets, teacher, snapshot_dir)
            module = module_from_weights_file(Path(learning["weights"]))
            score = planted_rule_score(variant, datasets, module, snapshots, device)
            print(
                f"[planted rule] reward={reward} seed={seed}: AUROC "
                f"{score.auroc_planted_levels:.3f} at the planted levels",
                flush=True,
            )
            runs.append(
                {
                    "reward": reward,
                    "seed": seed,
                    "learning_time_s": learning["learning_time_s"],
                    **score.to_dict(),
                }
            )
            write_json(run_dir.path / "planted_rule.json", {"runs": runs})
    summary = {
        reward: {
            key: _mean_std([r[key] for r in runs if r["reward"] == reward])
            for key in (
                "auroc_planted_levels",
                "auroc_all_pairs",
                "selection_planted",
                "selection_clean_same_levels",
                "selection_other_levels",
            )
        }
        for reward in rewards
    }
    record = {
        "planted_class": config.distill.planted_class,
        "planted_class_name": datasets.train.class_names[config.distill.planted_class],
        "planted_levels": list(config.distill.planted_levels),
        "runs": runs,
        "summary": summary,
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
        f"Teacher targets at {levels} are corrupted (rotated 180°) on every image holding a "
        f"`{record['planted_class_name']}` (class {record['planted_class']}). Scored on held-out "
        "decisions (val images, every snapshot student): AUROC of 1 − P(level selected) against "
        "the planted labels; 0.5 is chance, a static policy scores 0.5.",
        "",
        "| reward | seeds | AUROC planted levels | AUROC all pairs | P(sel) planted | "
        "P(sel) clean, same levels | P(sel) other levels |",
        "|---|---|---|---|---|---|---|",
    ]
    for reward, summary in record["summary"].items():

        def cell(key: str, summary: dict = summary) -> str:
            return f"{summary[key]['mean']:.3f} ± {summary[key]['std']:.3f}"

        lines.append(
            f"| {reward} | {summary['auroc_planted_levels']['n']} | "
            f"{cell('auroc_planted_levels')} | {cell('auroc_all_pairs')} | "
            f"{cell('selection_planted')} | {cell('selection_clean_same_levels')} | "
            f"{cell('selection_other_levels')} |"
        )
    lines += ["", "| reward | seed | AUROC planted levels | per level | learning time (s) |"]
    lines += ["|---|---|---|---|---|"]
    for run in record["runs"]:
        per_level = ", ".join(f"{k} {v:.3f}" for k, v in run["auroc_per_level"].items())
        lines.append(
            f"| {run['reward']} | {run['seed']} | {run['auroc_planted_levels']:.3f} | "
            f"{per_level} | {run['learning_time_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
