"""Per-sample, per-level KD losses over a lazy teacher pyramid.

The lazy teacher computes only the levels some sample selected, and for each such level only keeps
the rows of the samples that selected it (``LevelFeatures.sample_index``). ``masked_kd_losses``
evaluates the KD loss on exactly those rows and scatters the result into a ``[B, 4]`` tensor whose
other entries are constant zeros: an unselected (sample, level) pair costs nothing and sends no
gradient to the student.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.losses import LevelKDLoss
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import DetectorOutput
from rlpkd.models.lazy_pyramid import TeacherPyramid

__all__ = [
    "masked_kd_losses",
    "batch_kd_losses",
    "level_mask_from_pyramid",
    "reduce_kd_loss",
    "per_level_kd_loss",
]


def masked_kd_losses(
    kd: LevelKDLoss,
    student_features: dict[str, Tensor],
    student_class_logits: dict[str, Tensor],
    teacher: TeacherPyramid,
    boxes: Tensor,
    labels: Tensor,
    batch_size: int,
) -> Tensor:
    """Per-sample, per-level KD losses [B, 4] (columns in ``LEVELS`` order).

    Only the rows in each level's ``sample_index`` are computed; every other entry is a constant
    0.0 with no graph behind it, and levels absent from ``teacher`` are never touched.

    Args:
        kd: the KD loss.
        student_features: level -> [B, C_s, H, W] student FPN features (full batch).
        student_class_logits: level -> [B, K, H, W] student class logits (used if the loss needs
            teacher logits; may be empty otherwise).
        teacher: the lazy teacher pyramid.
        boxes: [B, M, 4] ground-truth boxes, xyxy in input pixels.
        labels: [B, M] class indices, -1 for padding.
        batch_size: B.

    Returns:
        [B, 4] float32 losses; differentiable w.r.t. the student at the selected entries only.
    """
    device = boxes.device
    losses = torch.zeros(batch_size, NUM_LEVELS, device=device, dtype=torch.float32)
    for column, level in enumerate(LEVELS):
        entry = teacher.get(level)
        if entry is None or entry.sample_index.numel() == 0:
            continue
        index = entry.sample_index.to(device=device, dtype=torch.long)
        if kd.needs_teacher_logits:
            if entry.class_logits is None:
                raise ValueError(
                    f"KD loss {type(kd).__name__} needs teacher class logits, but the teacher "
                    f"pyramid has none at {level}; run the teacher head at the selected levels"
                )
            student, target = student_class_logits[level], entry.class_logits
        else:
            student, target = student_features[level], entry.features
        level_losses = kd.level_loss(
            level, student[index], target.detach(), boxes[index], labels[index]
        )
        columns = torch.full_like(index, column)
        losses = losses.index_put((index, columns), level_losses.to(losses.dtype))
    return losses


def batch_kd_losses(
    kd: LevelKDLoss, output: DetectorOutput, teacher: TeacherPyramid, batch: DetectionBatch
) -> Tensor:
    """``masked_kd_losses`` [B, 4] of the student's forward ``output`` of ``batch``."""
    return masked_kd_losses(
        kd,
        output.features,
        output.class_logits,
        teacher,
        batch.boxes,
        batch.labels,
        len(batch),
    )


def level_mask_from_pyramid(
    teacher: TeacherPyramid, batch_size: int, device: torch.device | str | None = None
) -> Tensor:
    """[B, 4] bool, True where sample b's row is present at that level of the pyramid.

    ``device`` defaults to the sample indices' device (CPU for an empty pyramid).
    """
    if device is None:
        device = next((entry.sample_index.device for entry in teacher.values()), None)
    mask = torch.zeros(batch_size, NUM_LEVELS, dtype=torch.bool, device=device)
    for column, level in enumerate(LEVELS):
        entry = teacher.get(level)
        if entry is not None and entry.sample_index.numel() > 0:
            mask[entry.sample_index.to(device=mask.device, dtype=torch.long), column] = True
    return mask


def per_level_kd_loss(losses: Tensor, mask: Tensor) -> Tensor:
    """Per-level batch contributions [4]: ``sum_b mask*losses / B``; they sum to ``reduce_kd_loss``.

    Masked entries contribute exactly zero (selected with ``where``, so a NaN or inf there cannot
    leak in). These are the per-level task losses to weight, e.g. in GradNorm.
    """
    selected = torch.where(mask, losses, torch.zeros_like(losses))
    return selected.sum(dim=0) / max(1, losses.shape[0])


def reduce_kd_loss(losses: Tensor, mask: Tensor) -> Tensor:
    """Scalar KD loss: masked losses summed over levels, averaged over the batch."""
    return per_level_kd_loss(losses, mask).sum()
