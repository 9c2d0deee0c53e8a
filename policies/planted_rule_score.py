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

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from envs.snapshots import load_snapshot
from policies.level_policy_module import LevelSelectionModule
from policies.level_probabilities import level_selection_probabilities
from policies.policy_selector import PolicyLevels
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets, heldout_split
from rlpkd.data.coco import build_dataloader, collate_detection
from rlpkd.distill.level_value import level_values
from rlpkd.distill.planted import planted_pairs
from rlpkd.errors import ConfigError
from rlpkd.levels import LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.auroc import auroc

__all__ = ["PlantedRuleScore", "planted_rule_score", "planted_credit_auroc"]


@dataclass
class PlantedRuleScore:
    """How well a policy's level choices follow the planted rule on held-out decisions.

    Attributes:
        auroc_planted_levels: AUROC of ``1 − P(l selected)`` against the planted labels over the
            (sample, level) pairs at the planted levels: does the policy tell the images to skip?
        auroc_all_pairs: the same over all four levels of every sample.
        auroc_per_level: level -> AUROC over the samples at that level (planted levels only).
        auroc_within_level: the mean of ``auroc_per_level``: each level's samples ranked against
            each other only, so a preference for one level over another (the level mix) does
            not count for or against the rule, which pooling the levels does.
        selection_planted: mean ``P(l selected)`` over the planted pairs.
        selection_clean_same_levels: mean ``P(l selected)`` at the planted levels on clean images.
        selection_other_levels: mean ``P(l selected)`` at the other levels.
        decisions: held-out decisions scored (samples × snapshots).
        planted_share: share of those samples holding the planted class.
    """

    auroc_planted_levels: float
    auroc_all_pairs: float
    auroc_per_level: dict[str, float]
    auroc_within_level: float
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
    per_level = {
        level: auroc(skip_score[:, i], planted[:, i])
        for i, level in enumerate(LEVELS)
        if level in planted_levels
    }
    return PlantedRuleScore(
        auroc_planted_levels=auroc(skip_score[:, on_planted], planted[:, on_planted]),
        auroc_all_pairs=auroc(skip_score, planted),
        auroc_per_level=per_level,
        auroc_within_level=sum(per_level.values()) / len(per_level),
        selection_planted=float(selected[planted].mean()),
        selection_clean_same_levels=float(selected[clean_same].mean()),
        selection_other_levels=float(selected[:, ~on_planted].mean())
        if bool((~on_planted).any())
        else float("nan"),
        decisions=len(selected),
        planted_share=float(planted.any(dim=1).float().mean()),
    )


def planted_credit_auroc(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    snapshots: list[Path],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> dict[str, float]:
    """Does the credit see the rule? AUROC of ``−v_il`` against the planted pairs, per snapshot.

    ``v_il`` (``rlpkd.distill.level_value``) of every val image at the planted levels, for each
    snapshot student (its own objective and optimiser state), with V the first
    ``rl.heldout_size`` images of ``heldout_split(…).val`` as in the env. A policy trained on this
    credit can at best learn what one decision's value tells apart, so this is the single-decision
    ceiling against which ``planted_rule_score`` reads: near 0.5 here means the reward carries no
    rule; well above 0.5 here and near 0.5 there means the learning did not extract it.

    Besides ``step_<n>`` and ``pooled`` (AUROCs), ``planted_mean_step_<n>`` and
    ``clean_mean_step_<n>``: the mean ``v_il`` of the planted pairs and of the clean pairs at the
    same levels, in units of the snapshot's mean ``|Σ_l v_il|`` (the env's unit of value, up to
    its running average): a planted mean near 0 says the corruption makes those pairs worthless,
    below 0 harmful, which is what a policy can learn to avoid against the FLOPs price.
    """
    settings = config.distill
    if settings.planted_class < 0:
        raise ConfigError("planted_credit_auroc needs distill.planted_class >= 0 (a planted rule)")
    planted_levels = tuple(settings.planted_levels)
    on_planted = torch.tensor([level in planted_levels for level in LEVELS])
    split = heldout_split(datasets, config.search.holdout_fraction, config.runtime.seed)
    count = min(config.rl.heldout_size, len(split.val))
    heldout = collate_detection([split.val[i] for i in range(count)]).to(device)
    loader = build_dataloader(datasets.val, batch_size, shuffle=False, seed=0)
    result: dict[str, float] = {}
    values, labels = [], []
    for path in snapshots:
        state = load_snapshot(path, config, datasets.num_classes, torch.device(device))
        training = state.distillation_state(teacher)
        per_snapshot, per_labels = [], []
        for batch in loader:
            batch = batch.to(device)
            signal = level_values(training, batch, heldout)
            per_snapshot.append(signal.values.detach().float().cpu())
            per_labels.append(
                planted_pairs(batch.labels, settings.planted_class, planted_levels).cpu()
            )
        v, planted = torch.cat(per_snapshot), torch.cat(per_labels)
        result[f"step_{state.step}"] = auroc(-v[:, on_planted], planted[:, on_planted])
        unit = v.double().sum(dim=1).abs().mean().clamp_min(1e-30)
        clean_same = ~planted & on_planted[None, :]
        for name, pairs in (("planted", planted), ("clean", clean_same)):
            mean = (v.double()[pairs].mean() / unit).item() if bool(pairs.any()) else math.nan
            result[f"{name}_mean_step_{state.step}"] = mean
        values.append(v / v.std().clamp_min(1e-30))
        labels.append(planted)
    v, planted = torch.cat(values), torch.cat(labels)
    result["pooled"] = auroc(-v[:, on_planted], planted[:, on_planted])
    return result
