"""What a level-selection decision sees: only what is known before the teacher runs (DESIGN §5).

One row per training sample, ``observation_dim(num_classes)`` float32 values, all O(1):

======== ===================== ================================================================
index    name                  meaning
======== ===================== ================================================================
0-3      student_abs_P2..P5    log(1 + mean |x|) of the student's own FPN level on this sample
4-7      student_std_P2..P5    log(1 + std x) of the same level
8-11     boxes_P2..P5          fraction of the sample's ground-truth boxes that the FCOS range
                               rule assigns to each level (all 0 for a sample without boxes)
12       log_box_count         log(1 + number of ground-truth boxes)
13-16    running_gap_P2..P5    log(1 + running average of the raw per-level KD loss), shared by
                               the batch; updated only from levels some sample distilled, as in
                               Phase 3
17       progress              student training progress in [0, 1]
18-18+K  class_0..class_{K-1}  fraction of the sample's ground-truth boxes of each of the dataset's
                               K classes (all 0 for a sample without boxes)
======== ===================== ================================================================

The first ``BASE_OBS_DIM`` columns do not depend on the dataset; the class histogram has one column
per class, so a policy's input size fixes K (``num_classes_of_observation_dim``).

In training (the env and Phase 3) the student statistics come from the KD step's own training-mode
forward (``observations_from_features`` on its detached features: no second forward); see
docs/decision_process.md. Outside training ``eval_pyramid`` gives those features from a separate
no-grad eval-mode forward. Nothing here needs the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.normalise import RunningLevelScale
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.fcos_loss import box_pyramid_levels

__all__ = [
    "BASE_OBSERVATION_FEATURES",
    "BASE_OBS_DIM",
    "observation_features",
    "observation_dim",
    "num_classes_of_observation_dim",
    "RUNNING_GAP_MOMENTUM",
    "new_running_gap",
    "pyramid_statistics",
    "object_scale_histogram",
    "class_histogram",
    "observations_from_features",
    "eval_pyramid",
]

BASE_OBSERVATION_FEATURES: tuple[str, ...] = (
    *(f"student_abs_{level}" for level in LEVELS),
    *(f"student_std_{level}" for level in LEVELS),
    *(f"boxes_{level}" for level in LEVELS),
    "log_box_count",
    *(f"running_gap_{level}" for level in LEVELS),
    "progress",
)
"""Name of every observation column before the class histogram, in order."""
BASE_OBS_DIM = len(BASE_OBSERVATION_FEATURES)
"""Columns before the class histogram (18)."""


def observation_features(num_classes: int) -> tuple[str, ...]:
    """Name of every observation column for a dataset of ``num_classes`` classes, in order."""
    return (*BASE_OBSERVATION_FEATURES, *(f"class_{k}" for k in range(num_classes)))


def observation_dim(num_classes: int) -> int:
    """Length of one sample's observation for a dataset of ``num_classes`` classes."""
    return len(observation_features(num_classes))


def num_classes_of_observation_dim(obs_dim: int) -> int:
    """The K of a policy built for ``obs_dim``-long observations (inverse of ``observation_dim``).

    Raises:
        ValueError: ``obs_dim`` is shorter than the dataset-independent columns.
    """
    if obs_dim < BASE_OBS_DIM:
        raise ValueError(
            f"an observation of {obs_dim} values is shorter than the {BASE_OBS_DIM} columns every "
            "level-selection observation has; the policy was built for another observation"
        )
    return obs_dim - BASE_OBS_DIM


RUNNING_GAP_MOMENTUM = 0.9
"""EMA momentum of the running per-level KD gap shown in the observation."""


def new_running_gap() -> RunningLevelScale:
    """The running per-level KD gap: an EMA of raw per-sample KD losses over distilled entries.

    Its ``scale`` buffer [4] is the running gap (1 at a level never distilled yet). Update it with
    ``update(kd_raw, mask)`` after each student step, in the env and in Phase 3 alike.
    """
    return RunningLevelScale(momentum=RUNNING_GAP_MOMENTUM)


def pyramid_statistics(features: dict[str, Tensor]) -> Tensor:
    """[B, 8]: log(1 + mean |x|) then log(1 + std x) of each level P2..P5, per sample."""
    mean_abs = torch.stack([features[level].float().abs().mean(dim=(1, 2, 3)) for level in LEVELS])
    std = torch.stack([features[level].float().flatten(1).std(dim=1) for level in LEVELS])
    return torch.cat([mean_abs.T.log1p(), std.T.log1p()], dim=1)


def object_scale_histogram(boxes: Tensor, labels: Tensor, thresholds: Sequence[float]) -> Tensor:
    """[B, 5]: fraction of each sample's boxes assigned to P2..P5, then log(1 + box count).

    Args:
        boxes: [B, M, 4] padded xyxy boxes in input pixels.
        labels: [B, M] class indices, -1 on padding rows (ignored).
        thresholds: the FCOS regression-distance boundaries (px) between P2|P3, P3|P4, P4|P5.
    """
    valid = (labels >= 0).float()
    level = box_pyramid_levels(boxes.float(), tuple(float(t) for t in thresholds))
    one_hot = torch.nn.functional.one_hot(level, NUM_LEVELS).float() * valid[..., None]
    counts = one_hot.sum(dim=1)  # [B, 4]
    total = counts.sum(dim=1, keepdim=True)
    return torch.cat([counts / total.clamp_min(1.0), total.log1p()], dim=1)


def class_histogram(labels: Tensor, num_classes: int) -> Tensor:
    """[B, K]: fraction of each sample's ground-truth boxes of each class (0 without boxes).

    Args:
        labels: [B, M] class indices in [0, K), -1 on padding rows (ignored).
        num_classes: K, the dataset's number of classes.
    """
    valid = labels >= 0
    one_hot = torch.nn.functional.one_hot(labels.clamp_min(0).long(), num_classes).float()
    counts = (one_hot * valid[..., None].float()).sum(dim=1)
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)


def observations_from_features(
    features: dict[str, Tensor],
    batch: DetectionBatch,
    running_gap: Tensor,
    progress: float,
    thresholds: Sequence[float],
    num_classes: int,
) -> np.ndarray:
    """Observations [B, observation_dim(num_classes)] float32 from the student's pyramid
    ``features`` of ``batch``.

    Use this on a student forward of the batch that already exists (detach it first), or on
    ``eval_pyramid``'s.
    """
    size = len(batch)
    shared = torch.cat(
        [
            running_gap.detach().float().cpu().clamp_min(0.0).log1p(),
            torch.tensor([float(progress)]),
        ]
    )
    rows = torch.cat(
        [
            pyramid_statistics(features).cpu(),
            object_scale_histogram(batch.boxes, batch.labels, thresholds).cpu(),
            shared.expand(size, -1),
            class_histogram(batch.labels, num_classes).cpu(),
        ],
        dim=1,
    )
    return rows.numpy().astype(np.float32)


def eval_pyramid(student: PyramidDetector, images: Tensor) -> dict[str, Tensor]:
    """The student's pyramid features of ``images`` from a separate no-grad forward in eval
    mode (its mode restored): what ``observations_from_features`` reads outside training."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            return student.pyramid(images)
    finally:
        student.train(was_training)
