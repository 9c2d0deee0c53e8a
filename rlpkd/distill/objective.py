"""The student's training objective: detection loss + per-level, per-sample masked KD."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlpkd.config import DistillConfig
from rlpkd.distill.gradnorm import GradNormBalancer
from rlpkd.distill.losses import LevelKDLoss, build_kd_loss
from rlpkd.distill.normalise import RunningLevelScale
from rlpkd.distill.planted import PlantedCorruptionKD
from rlpkd.levels import LEVELS
from rlpkd.models.detector import PyramidDetector

__all__ = ["ObjectiveTerms", "DistillationObjective", "DistillationState"]


@dataclass
class ObjectiveTerms:
    """What one step's objective computed.

    Attributes:
        total: the scalar to back-propagate.
        detection: the detection loss (scalar).
        kd_raw: [B, 4] per-sample, per-level KD losses before normalisation (0 where masked).
        kd_normalised: [B, 4] after per-level normalisation (0 where masked).
        level_weights: [5] weights of {detection, KD P2..P5} (GradNorm's, or fixed).
    """

    total: torch.Tensor
    detection: torch.Tensor
    kd_raw: torch.Tensor
    kd_normalised: torch.Tensor
    level_weights: torch.Tensor


class DistillationObjective(nn.Module):
    """Detection loss + ``weight`` x normalised, masked KD (DESIGN §3), optionally GradNorm-balanced.

    Each KD term is the batch mean of the per-sample, per-level loss (masked entries are exact
    zeros), so a level's weight in the total grows with the number of samples that selected it.
    """

    def __init__(
        self,
        settings: DistillConfig,
        student_channels: int,
        teacher_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.settings = settings
        kd = build_kd_loss(
            settings.loss, student_channels, teacher_channels, num_classes, **settings.loss_params
        )
        if settings.planted_class >= 0:
            kd = PlantedCorruptionKD(
                kd,
                settings.planted_class,
                tuple(settings.planted_levels),
                settings.planted_corruption,
            )
        self.kd: LevelKDLoss = kd
        self.scale = RunningLevelScale(momentum=settings.norm_momentum)
        self.balancer = (
            GradNormBalancer(
                ["detection", *LEVELS], alpha=settings.gradnorm_alpha, lr=settings.gradnorm_lr
            )
            if settings.gradnorm
            else None
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the student's optimiser updates (the KD adapters), not GradNorm's weights."""
        return list(self.kd.parameters())

    def forward(
        self,
        detection: torch.Tensor,
        kd_raw: torch.Tensor,
        mask: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> ObjectiveTerms:
        """Combine the terms; ``shared_parameter`` (GradNorm's last shared layer) when balancing."""
        mask = mask.to(kd_raw.device)
        if self.settings.normalise:
            if self.training:
                self.scale.update(kd_raw.detach(), mask)
            kd_normalised = self.scale.normalise(kd_raw, mask)
        else:
            kd_normalised = torch.where(mask, kd_raw, torch.zeros_like(kd_raw))
        kd_terms = self.settings.weight * kd_normalised.mean(dim=0)  # [4]
        tasks = torch.cat([detection.reshape(1), kd_terms])
        if self.balancer is not None and self.training:
            if shared_parameter is None:
                raise ValueError("GradNorm needs the student's last shared parameter")
            active = torch.cat([mask.new_ones(1), mask.any(dim=0)])
            total = self.balancer.balance(tasks, active, shared_parameter)
            weights = self.balancer.weights
        else:
            total = tasks.sum()
            weights = torch.ones(len(tasks))
        return ObjectiveTerms(
            total=total,
            detection=detection.detach(),
            kd_raw=kd_raw.detach(),
            kd_normalised=kd_normalised.detach(),
            level_weights=weights.detach().cpu(),
        )


@dataclass(frozen=True)
class DistillationState:
    """The student being distilled, its frozen teacher, the KD objective and the student's
    optimiser: what a KD step updates and what the level-value signal and a training-observing
    selector read (``rlpkd.distill.level_value``, ``TrainingObservingSelector``)."""

    student: PyramidDetector
    teacher: PyramidDetector
    objective: DistillationObjective
    optimizer: torch.optim.Optimizer
