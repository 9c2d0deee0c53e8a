"""The level-value signal checked against reality: predicted against measured held-out loss drops.

At a fixed student state, for many random [B, 4] masks, the predicted ``Σ_{(i,l)∈mask} v_il``
(``rlpkd.distill.level_value``) is compared with the measured change of the held-out detection loss
after the real ``kd_training_step`` with that mask, by Spearman's ρ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.level_value import level_values, spearman_rho
from rlpkd.distill.objective import DistillationState
from rlpkd.levels import NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.runtime import eval_mode
from rlpkd.training.kd_step import kd_training_step

__all__ = ["LevelValueValidation", "validate_level_values"]


@dataclass
class LevelValueValidation:
    """Predicted against measured held-out loss drops over random masks at one student state.

    Attributes:
        rho: Spearman rank correlation of ``predicted`` and ``measured``.
        predicted: [K] ``Σ_{(i,l)∈mask} v_il`` per mask.
        measured: [K] ``L_det(V)`` before minus after the real step with that mask.
        masks: [K, B, 4] the masks.
        gflops_per_decision: the value signal's cost (``level_value_gflops``) at this batch.
    """

    rho: float
    predicted: Tensor
    measured: Tensor
    masks: Tensor
    gflops_per_decision: float


def _heldout_loss(student: PyramidDetector, heldout: DetectionBatch) -> float:
    with eval_mode(student), torch.no_grad():
        output = student(heldout.images)
        return float(student.detection_loss(output, heldout.boxes, heldout.labels)["total"])


def validate_level_values(
    training: DistillationState,
    batch: DetectionBatch,
    heldout: DetectionBatch,
    num_masks: int = 32,
    seed: int = 0,
    select_probability: float = 0.5,
    grad_clip: float = 0.0,
) -> LevelValueValidation:
    """Check the prediction against reality at the student's current state.

    For ``num_masks`` random [B, 4] masks (each pair kept with ``select_probability``, seeded),
    restore the same student, objective and optimiser state, take the real
    ``kd_training_step`` with that mask and measure ``L_det(V)`` (BatchNorm in eval) before minus
    after; compare with ``Σ_{(i,l)∈mask} v_il`` by Spearman's ρ. Every state is restored at the end.
    """
    with FlopCounterMode(display=False) as counter:
        values = level_values(training, batch, heldout)
    student, objective, optimizer = training.student, training.objective, training.optimizer
    before = _heldout_loss(student, heldout)
    saved = (
        copy.deepcopy(student.state_dict()),
        copy.deepcopy(objective.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
    )
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(num_masks, len(batch), NUM_LEVELS, generator=generator) < select_probability
    measured = torch.empty(num_masks, dtype=torch.float64)
    device = batch.images.device
    try:
        for k, mask in enumerate(masks):
            student.load_state_dict(saved[0])
            objective.load_state_dict(saved[1])
            optimizer.load_state_dict(copy.deepcopy(saved[2]))
            kd_training_step(
                student, training.teacher, objective, optimizer, batch, mask.to(device), grad_clip
            )
            measured[k] = before - _heldout_loss(student, heldout)
    finally:
        student.load_state_dict(saved[0])
        objective.load_state_dict(saved[1])
        optimizer.load_state_dict(saved[2])
        optimizer.zero_grad(set_to_none=True)
    predicted = (masks.to(values.values.device) * values.values).sum(dim=(1, 2)).double().cpu()
    return LevelValueValidation(
        rho=spearman_rho(predicted, measured),
        predicted=predicted,
        measured=measured,
        masks=masks,
        gflops_per_decision=counter.get_total_flops() / len(batch) / 1e9,
    )
