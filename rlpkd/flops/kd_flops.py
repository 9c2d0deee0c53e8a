"""The FLOPs model of DESIGN §4: per-image cost of distilling a level set, and of a student step.

``kd_flops(levels)`` is the teacher-side and loss-side work the lazy teacher pyramid does for one
image that selected ``levels``: the teacher backbone (if any level), the FPN laterals from P5 down to
the lowest selected level, the FPN output convs at the selected levels, the teacher's class branch
at those levels when the KD loss compares logits, and the KD loss's own modules (forward and
backward). ``student_train_flops()`` is one forward and backward of the whole student detector.
All numbers are analytic (``rlpkd.flops.analytic``), 2 FLOPs per multiply-add, and agree with
``torch.utils.flop_counter.FlopCounterMode`` (checked in ``tests/flops``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import torch

from rlpkd.config import Config
from rlpkd.distill.losses import LevelKDLoss, build_kd_loss
from rlpkd.errors import ConfigError
from rlpkd.flops.analytic import (
    conv_train_flops,
    fpn_lateral_flops,
    fpn_output_flops,
    head_class_branch_flops,
    head_flops,
    resnet_body_flops,
    resnet_stem_conv_flops,
)
from rlpkd.levels import LEVELS, NUM_LEVELS, all_subsets, parse_levels
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.factory import build_student, build_teacher

__all__ = ["FlopsModel", "level_set_key", "flops_model_from_config", "default_num_classes"]

_GIGA = 1e9


def level_set_key(levels: Sequence[str]) -> str:
    """Key of a level set in ``FlopsModel.table()``: ``"P2,P4"``, or ``"none"`` when empty."""
    return ",".join(levels) if levels else "none"


class FlopsModel:
    """Analytic per-image FLOPs of KD at any level set, for one teacher/student/loss/image size.

    Args:
        teacher: the teacher detector (its weights are not used, only its architecture).
        student: the student detector.
        kd_loss: the KD loss; its ``level_train_flops`` gives the loss's own cost per level.
        image_size: side of the square input image in pixels.
    """

    def __init__(
        self,
        teacher: PyramidDetector,
        student: PyramidDetector,
        kd_loss: LevelKDLoss,
        image_size: int,
    ) -> None:
        self.image_size = int(image_size)
        image_hw = (self.image_size, self.image_size)
        self.needs_teacher_logits = bool(kd_loss.needs_teacher_logits)

        self.teacher_body_flops, stage_hw = resnet_body_flops(teacher.body, image_hw)
        self.level_hw: dict[str, tuple[int, int]] = dict(zip(LEVELS, stage_hw, strict=True))
        self.teacher_lateral_flops = fpn_lateral_flops(teacher.fpn, stage_hw)
        self.teacher_output_flops = fpn_output_flops(teacher.fpn, stage_hw)
        self.teacher_class_branch_flops = [
            head_class_branch_flops(teacher.head, hw) if self.needs_teacher_logits else 0.0
            for hw in stage_hw
        ]
        self.loss_flops = [
            float(kd_loss.level_train_flops(level, *self.level_hw[level])) for level in LEVELS
        ]

        student_forward, student_hw = resnet_body_flops(student.body, image_hw)
        student_forward += sum(fpn_lateral_flops(student.fpn, student_hw))
        student_forward += sum(fpn_output_flops(student.fpn, student_hw))
        student_forward += sum(head_flops(student.head, hw) for hw in student_hw)
        stem = resnet_stem_conv_flops(student.body, image_hw)
        # every conv's input needs a gradient except the stem's (the image)
        self._student_train_flops = conv_train_flops(student_forward - stem) + conv_train_flops(
            stem, input_needs_grad=False
        )
        self._cache: dict[tuple[str, ...], float] = {}

    def breakdown(self, levels: Sequence[str] | str) -> dict[str, float]:
        """Per-image FLOPs of ``levels`` by component (all 0 for the empty set).

        Keys: ``teacher_body``, ``fpn_lateral``, ``fpn_output``, ``teacher_class_branch``,
        ``kd_loss``; their sum is ``kd_flops(levels)``.
        """
        chosen = parse_levels(levels)
        parts = {
            "teacher_body": 0.0,
            "fpn_lateral": 0.0,
            "fpn_output": 0.0,
            "teacher_class_branch": 0.0,
            "kd_loss": 0.0,
        }
        if not chosen:
            return parts
        indices = [LEVELS.index(level) for level in chosen]
        parts["teacher_body"] = self.teacher_body_flops
        # the top-down path runs from P5 down to the lowest selected level
        parts["fpn_lateral"] = sum(self.teacher_lateral_flops[min(indices) :])
        parts["fpn_output"] = sum(self.teacher_output_flops[i] for i in indices)
        parts["teacher_class_branch"] = sum(self.teacher_class_branch_flops[i] for i in indices)
        parts["kd_loss"] = sum(self.loss_flops[i] for i in indices)
        return parts

    def kd_flops(self, levels: Sequence[str] | str) -> float:
        """Per-image FLOPs of distilling ``levels`` (teacher work + KD loss); 0 for no level."""
        chosen = parse_levels(levels)
        if chosen not in self._cache:
            self._cache[chosen] = sum(self.breakdown(chosen).values())
        return self._cache[chosen]

    def kd_gflops(self, levels: Sequence[str] | str) -> float:
        """``kd_flops`` in GFLOPs."""
        return self.kd_flops(levels) / _GIGA

    def student_train_flops(self) -> float:
        """Per-image FLOPs of one forward + backward of the whole student detector."""
        return self._student_train_flops

    def student_train_gflops(self) -> float:
        """``student_train_flops`` in GFLOPs."""
        return self._student_train_flops / _GIGA

    def table(self) -> dict[str, float]:
        """``kd_gflops`` of all 16 level subsets, keyed by ``level_set_key`` (index order)."""
        return {level_set_key(levels): self.kd_gflops(levels) for levels in all_subsets()}

    def fraction(self, levels: Sequence[str] | str) -> float:
        """``kd_flops(levels) / kd_flops(all levels)``, in [0, 1]."""
        return self.kd_flops(levels) / self.kd_flops(LEVELS)

    def subset_kd_flops(self) -> torch.Tensor:
        """[16] float64: ``kd_flops`` per image of every level subset, by subset index
        (``rlpkd.levels.subset_to_index``); what a run counts per sample."""
        return torch.tensor([self.kd_flops(s) for s in all_subsets()], dtype=torch.float64)

    def subset_kd_fractions(self) -> torch.Tensor:
        """[16] float32: ``fraction`` of every level subset, by subset index (the FLOPs price of a
        choice in the RL reward and the GDAS penalty)."""
        return torch.tensor([self.fraction(s) for s in all_subsets()], dtype=torch.float32)

    def expected_kd_flops(self, level_probs: Sequence[float]) -> float:
        """Expected per-image ``kd_flops`` when level i is included independently with prob p_i.

        Exact: the sum over all 16 subsets of their probability times their cost.
        """
        probs = [float(p) for p in level_probs]
        if len(probs) != NUM_LEVELS or not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"need {NUM_LEVELS} probabilities in [0, 1], got {list(level_probs)}")
        expected = 0.0
        for included in itertools.product((False, True), repeat=NUM_LEVELS):
            weight = math.prod(p if on else 1.0 - p for p, on in zip(probs, included, strict=True))
            if weight > 0.0:
                levels = tuple(level for level, on in zip(LEVELS, included, strict=True) if on)
                expected += weight * self.kd_flops(levels)
        return expected

    def inclusion_prob_for_fraction(self, fraction: float, tolerance: float = 1e-10) -> float:
        """The per-level inclusion probability p whose expected ``kd_flops`` (every level
        included independently with p) is ``fraction`` of ``kd_flops(all)``.

        Used by the ``random:FRACTION`` baseline. The expectation grows monotonically with p, from 0
        at p = 0 to 1 at p = 1, so bisection finds it.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"random:FRACTION needs a FLOPs fraction in [0, 1], got {fraction}")
        full = self.kd_flops(LEVELS)
        low, high = 0.0, 1.0
        while high - low > tolerance:
            middle = 0.5 * (low + high)
            if self.expected_kd_flops([middle] * NUM_LEVELS) / full < fraction:
                low = middle
            else:
                high = middle
        return 0.5 * (low + high)


def default_num_classes(config: Config) -> int:
    """Classes of the configured data: 6 for the embedded dataset, 80 for COCO."""
    return 6 if config.data.source == "embedded" else 80


def flops_model_from_config(config: Config, num_classes: int | None = None) -> FlopsModel:
    """A FlopsModel for the config's teacher, student, KD loss and image size.

    Models are built with random weights (only their architecture matters); ``num_classes``
    defaults to ``default_num_classes(config)``.
    """
    if num_classes is None:
        num_classes = default_num_classes(config)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes}")
    # Only the architecture matters: never read pretrained weights here.
    config = dataclasses.replace(
        config,
        teacher=dataclasses.replace(config.teacher, pretrained=False),
        student=dataclasses.replace(config.student, pretrained=False),
    )
    teacher = build_teacher(config, num_classes)
    student = build_student(config, num_classes)
    kd_loss = build_kd_loss(
        config.distill.loss,
        config.student.fpn_channels,
        config.teacher.fpn_channels,
        num_classes,
        **config.distill.loss_params,
    )
    return FlopsModel(teacher, student, kd_loss, config.data.image_size)
