"""The value-matrix phase of the headroom report (``experiments.headroom``, phase 1).

At each student state of the snapshot pool, the per-(sample, level) values ``v_il``
(``rlpkd.distill.level_value``) of a few training batches against a held-out batch V, and their
two-way ANOVA (``rlpkd.report.level_value_summary``) per snapshot and pooled over snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.snapshots import load_snapshot
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, heldout_split
from rlpkd.data.coco import build_dataloader, collate_detection
from rlpkd.data.synthetic import PER_IMAGE_CHOICES
from rlpkd.distill.level_value import level_values
from rlpkd.errors import ConfigError
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.interaction_anova import group_by_level_sum_of_squares
from rlpkd.report.level_value_summary import pool_value_matrices, summarise_value_matrix

__all__ = ["regime_order", "valued_batches", "snapshot_value_matrices", "value_analysis"]


def regime_order(regimes: Sequence[str]) -> list[str]:
    """The distinct ``regimes``: those of ``PER_IMAGE_CHOICES`` in its order, then any others sorted."""
    present = set(regimes)
    return [r for r in PER_IMAGE_CHOICES if r in present] + sorted(present - set(PER_IMAGE_CHOICES))


def valued_batches(
    config: Config, datasets: DetectionDatasets, value_batches: int, heldout_size: int
) -> tuple[list[DetectionBatch], DetectionBatch]:
    """The valued training batches (the first ``value_batches`` of a seeded shuffle of
    ``heldout_split(…).train``) and the held-out batch V (its first ``heldout_size`` ``.val``
    images).

    Raises:
        ConfigError: a bad ``search.holdout_fraction``, or too few images for ``value_batches``.
    """
    seed = config.runtime.seed
    try:
        split = heldout_split(datasets, config.search.holdout_fraction, seed)
    except ValueError as error:
        raise ConfigError(f"search.holdout_fraction: {error}") from None
    batch_size = config.student_schedule.batch_size
    loader = build_dataloader(split.train, batch_size, shuffle=True, seed=seed, drop_last=True)
    if len(loader) < value_batches:
        raise ConfigError(
            f"--value-batches {value_batches}: the {len(split.train)} training images "
            f"outside the held-out part make only {len(loader)} batches of "
            f"student_schedule.batch_size={batch_size}"
        )
    heldout = collate_detection([split.val[i] for i in range(min(heldout_size, len(split.val)))])
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the training view's flips
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == value_batches:
                break
    return batches, heldout


def snapshot_value_matrices(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    snapshot_paths: Sequence[Path],
    batches: Sequence[DetectionBatch],
    heldout: DetectionBatch,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Per snapshot: its fraction, step and the [n, 4] values with each row's image id."""
    results = []
    heldout = heldout.to(device)
    bar = tqdm(
        total=len(snapshot_paths) * len(batches),
        desc="level values",
        disable=not config.runtime.progress,
    )
    for fraction, path in zip(config.rl.snapshot_fractions, snapshot_paths, strict=True):
        state = load_snapshot(path, config, datasets.num_classes, device)
        training = state.distillation_state(teacher)
        rows, ids, heldout_losses = [], [], []
        for batch in batches:
            values = level_values(training, batch.to(device), heldout)
            rows.append(values.values.double().cpu().numpy())
            ids += batch.image_ids.tolist()
            heldout_losses.append(values.heldout_loss)
            bar.update(1)
        results.append(
            {
                "fraction": float(fraction),
                "step": state.step,
                "lr": float(state.optimizer.param_groups[0]["lr"]),
                "heldout_loss": heldout_losses[0],
                "values": np.concatenate(rows),
                "image_ids": ids,
            }
        )
    bar.close()
    return results


def value_analysis(matrices: list[dict[str, Any]], train_regimes: dict[int, str]) -> dict[str, Any]:
    """ANOVA summaries per snapshot and pooled (each snapshot divided by its std)."""
    per_snapshot = []
    all_regimes: list[str] = []
    for matrix in matrices:
        regimes = [train_regimes[i] for i in matrix["image_ids"]]
        all_regimes += regimes
        order = regime_order(regimes)
        summary = summarise_value_matrix(matrix["values"], regimes, order)
        std = summary["std"]
        normalised_means = {
            regime: [m / std if std > 0 else m for m in entry["mean"]]
            for regime, entry in summary["by_regime"].items()
        }
        per_snapshot.append(
            {
                "fraction": matrix["fraction"],
                "step": matrix["step"],
                "lr": matrix["lr"],
                "heldout_loss": matrix["heldout_loss"],
                **summary,
                "normalised_mean_by_regime": normalised_means,
                "rows": [
                    {"image_id": int(i), "regime": r, "values": v.tolist()}
                    for i, r, v in zip(matrix["image_ids"], regimes, matrix["values"], strict=True)
                ],
            }
        )
    pooled_values = pool_value_matrices([m["values"] for m in matrices])
    pooled = summarise_value_matrix(pooled_values, all_regimes, regime_order(all_regimes))
    # level preferences that change with the training stage also count as interaction when
    # pooled: their part, as the regime x level part is for regimes
    stages = [f"{m['fraction']:g}" for m in matrices for _ in m["image_ids"]]
    ss_stage = group_by_level_sum_of_squares(pooled_values, stages)
    total, interaction = pooled["anova"]["ss_total"], pooled["anova"]["ss_interaction"]
    pooled["snapshot_x_level"] = {
        "ss": ss_stage,
        "share_of_total": ss_stage / total if total > 0 else math.nan,
        "share_of_interaction": ss_stage / interaction if interaction > 0 else math.nan,
    }
    return {"snapshots": per_snapshot, "pooled": pooled}
