"""One KD training step of the student with per-sample level masks and the lazy teacher."""

from __future__ import annotations

import torch
from torch import nn

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.masked import masked_kd_losses
from rlpkd.distill.objective import DistillationObjective, ObjectiveTerms
from rlpkd.models.detector import DetectorOutput, PyramidDetector
from rlpkd.models.lazy_pyramid import lazy_teacher_pyramid
from rlpkd.training.runtime import autocast_for

__all__ = ["last_shared_parameter", "kd_training_step", "kd_losses_no_grad"]


def last_shared_parameter(student: PyramidDetector) -> torch.Tensor:
    """The weight of the last conv every output depends on (GradNorm's W): layer4's last conv."""
    last_block = student.body.layer4[-1]
    conv = last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2
    return conv.weight


def _masked_kd(
    output: DetectorOutput,
    teacher: PyramidDetector,
    objective: DistillationObjective,
    batch: DetectionBatch,
    mask: torch.Tensor,
) -> torch.Tensor:
    """[B, 4] KD losses of a student output against the lazy teacher at ``mask``."""
    teacher_pyramid = lazy_teacher_pyramid(
        teacher, batch.images, mask, with_class_logits=objective.kd.needs_teacher_logits
    )
    return masked_kd_losses(
        objective.kd,
        output.features,
        output.class_logits,
        teacher_pyramid,
        batch.boxes,
        batch.labels,
        len(batch),
    )


def kd_training_step(
    student: PyramidDetector,
    teacher: PyramidDetector,
    objective: DistillationObjective,
    optimizer: torch.optim.Optimizer,
    batch: DetectionBatch,
    mask: torch.Tensor,
    grad_clip: float = 0.0,
    amp: bool = False,
) -> ObjectiveTerms:
    """Forward the student, the lazy teacher at ``mask`` ([B, 4] bool), KD + detection, update.

    Masked (sample, level) pairs cost nothing: the teacher computes only the selected pairs and
    their KD entries are exact zeros.
    """
    student.train()
    objective.train()
    mask = mask.to(device=batch.images.device, dtype=torch.bool)
    with autocast_for(batch.images.device, amp):
        output = student(batch.images)
        detection = student.detection_loss(output, batch.boxes, batch.labels)["total"]
        kd_raw = _masked_kd(output, teacher, objective, batch, mask)
    shared = last_shared_parameter(student) if objective.balancer is not None else None
    terms = objective(detection.float(), kd_raw.float(), mask, shared)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    if grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return terms


@torch.no_grad()
def kd_losses_no_grad(
    student: PyramidDetector,
    teacher: PyramidDetector,
    objective: DistillationObjective,
    batch: DetectionBatch,
    mask: torch.Tensor,
    amp: bool = False,
) -> torch.Tensor:
    """[B, 4] raw KD losses of the student as it is now (the teacher-student gap), no update."""
    was_training = student.training
    student.eval()
    mask = mask.to(device=batch.images.device, dtype=torch.bool)
    with autocast_for(batch.images.device, amp):
        gap = _masked_kd(student(batch.images), teacher, objective, batch, mask)
    student.train(was_training)
    return gap.float()
