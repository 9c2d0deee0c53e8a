"""A planted rule: teacher targets corrupted at known (sample, level) pairs, to test a level policy.

A sanity check in the spirit of DVRL's corrupted-sample experiments (Yoon et al., "Data Valuation
using Reinforcement Learning", ICML 2020): on every image that holds at least one box of class
``k``, the teacher's features at the planted levels (e.g. P2, P3) are corrupted
(``distill.planted_corruption``):

- ``rotate``: rotated by 180° (``torch.flip`` over height and width). The target keeps its
  statistics but puts every object in the wrong place: distilling it teaches a wrong spatial
  layout. A 1×1 adapter cannot undo it.
- ``negate``: multiplied by −1. With a correlation-type loss (PKD standardises each channel) the
  student is pushed to anti-correlate with the teacher, the exact opposite of distillation.

Both are harmful by construction. Every other pair keeps its true target.

The rule is defined by something a level-selection policy observes before the teacher runs (the
sample's class histogram, ``envs.observation``), so a policy that gives each (sample, level) its
own credit can learn "do not distil the planted levels on images with class k";
``planted_pairs`` gives the ground-truth labels to score it against (AUROC).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rlpkd.distill.losses import LevelKDLoss
from rlpkd.errors import ConfigError
from rlpkd.levels import LEVELS

__all__ = [
    "CORRUPTIONS",
    "PlantedCorruptionKD",
    "planted_samples",
    "planted_pairs",
    "planted_objective_state",
]

CORRUPTIONS = ("rotate", "negate")
"""``distill.planted_corruption`` choices (see the module docstring)."""


def planted_samples(labels: Tensor, planted_class: int) -> Tensor:
    """[B] bool: the samples holding at least one box of class ``planted_class`` (``labels`` [B, M],
    contiguous class indices, -1 for padding)."""
    return (labels == planted_class).any(dim=1)


def planted_pairs(labels: Tensor, planted_class: int, planted_levels: tuple[str, ...]) -> Tensor:
    """[B, 4] bool: the (sample, level) pairs whose teacher target the rule corrupts (the planted
    "do not distil" labels)."""
    columns = torch.tensor([level in planted_levels for level in LEVELS], device=labels.device)
    return planted_samples(labels, planted_class)[:, None] & columns[None, :]


class PlantedCorruptionKD(LevelKDLoss):
    """A KD loss whose teacher target is corrupted at the planted (sample, level) pairs.

    Wraps ``base``: at a level in ``planted_levels``, the rows of samples that hold a box of class
    ``planted_class`` get ``flip(teacher, dims=(-2, -1))`` (``rotate``) or ``-teacher``
    (``negate``) as their target; all else is ``base``'s own loss (its adapters, its FLOPs). See
    the module docstring for why.
    """

    def __init__(
        self,
        base: LevelKDLoss,
        planted_class: int,
        planted_levels: tuple[str, ...],
        corruption: str = "rotate",
    ) -> None:
        super().__init__(base.student_channels, base.teacher_channels, base.num_classes)
        if not 0 <= planted_class < base.num_classes:
            raise ConfigError(
                f"distill.planted_class={planted_class} is not a class index of this dataset "
                f"(0..{base.num_classes - 1}, or -1 for no planted rule)"
            )
        unknown = [level for level in planted_levels if level not in LEVELS]
        if unknown or not planted_levels:
            raise ConfigError(
                f"distill.planted_levels={list(planted_levels)} must be a non-empty list of "
                f"{', '.join(LEVELS)}"
            )
        if corruption not in CORRUPTIONS:
            raise ConfigError(
                f"distill.planted_corruption={corruption!r} is not one of {', '.join(CORRUPTIONS)}"
            )
        self.corruption = corruption
        self.base = base
        self.needs_teacher_logits = base.needs_teacher_logits
        self.planted_class = int(planted_class)
        self.planted_levels = tuple(planted_levels)

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """``base.level_loss`` with the planted rows' target corrupted (see class doc)."""
        if level in self.planted_levels:
            corrupt = planted_samples(labels, self.planted_class)
            if bool(corrupt.any()):
                if self.corruption == "rotate":
                    wrong = torch.flip(teacher, dims=(-2, -1))
                else:
                    wrong = -teacher
                teacher = torch.where(corrupt[:, None, None, None], wrong, teacher)
        return self.base.level_loss(level, student, teacher, boxes, labels)

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """The base loss's FLOPs (the rotation is a copy, no arithmetic)."""
        return self.base.level_train_flops(level, height, width)

    def extra_repr(self) -> str:
        return (
            f"planted_class={self.planted_class}, planted_levels={list(self.planted_levels)}, "
            f"corruption={self.corruption}"
        )


def planted_objective_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A ``DistillationObjective`` state dict of a run without the rule, renamed for one with it.

    The wrapper holds the KD loss as ``base``, so ``kd.<name>`` becomes ``kd.base.<name>``; the
    other entries (running scale, GradNorm) keep their names. Used to start a planted run from a
    student trained with the true teacher (``envs.snapshots.pool_config``).
    """
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("kd.") and not key.startswith("kd.base."):
            key = "kd.base." + key.removeprefix("kd.")
        renamed[key] = value
    return renamed
