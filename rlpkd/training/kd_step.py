"""One KD training step of the student with per-sample level masks and the lazy teacher.

Every step is guarded against divergence: before the optimiser step, one ``isfinite`` check on
the total loss and the gradient norm (a single device sync); only when it fails are the terms
searched for the offending one, and a :class:`~rlpkd.errors.DivergenceError` stops the run
before any weight is updated with a non-finite value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.masked import batch_kd_losses
from rlpkd.distill.objective import DistillationObjective, ObjectiveTerms
from rlpkd.errors import DivergenceError
from rlpkd.levels import LEVELS
from rlpkd.models.detector import DetectorOutput, PyramidDetector
from rlpkd.models.lazy_pyramid import lazy_teacher_pyramid
from rlpkd.models.teacher_cache import TeacherFeatureCache
from rlpkd.runtime import autocast_for

__all__ = [
    "GRADIENT_NORM",
    "last_shared_parameter",
    "first_non_finite",
    "clip_and_measure_gradients",
    "raise_if_diverged",
    "objective_term_values",
    "student_forward",
    "detached_features",
    "detached_output",
    "kd_training_step",
    "kd_losses_no_grad",
]

GRADIENT_NORM = "gradient norm"
"""The term named when the loss is finite but its gradient is not."""

NamedValues = Sequence[tuple[str, torch.Tensor | float]]


def first_non_finite(named: Iterable[tuple[str, torch.Tensor | float]]) -> tuple[str, float] | None:
    """The first ``(name, value)`` holding a NaN or inf (for a tensor, its first such entry).

    Returns None when every value is finite.
    """
    for name, value in named:
        if isinstance(value, torch.Tensor):
            flat = value.detach().float().reshape(-1).cpu()
            bad = flat[~torch.isfinite(flat)]
            if bad.numel():
                return name, float(bad[0])
        elif not math.isfinite(float(value)):
            return name, float(value)
    return None


def clip_and_measure_gradients(
    parameters: Iterable[torch.Tensor], grad_clip: float
) -> torch.Tensor:
    """The total gradient norm of ``parameters`` (0-dim tensor, on their device), clipped to
    ``grad_clip`` first when it is > 0. No device sync: the caller checks it with the loss."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if grad_clip > 0:
        return nn.utils.clip_grad_norm_(params, grad_clip)
    return nn.utils.get_total_norm([p.grad for p in params])


def raise_if_diverged(
    loss: torch.Tensor,
    grad_norm: torch.Tensor | None,
    phase: str,
    step: int,
    terms: Callable[[], NamedValues] = lambda: (),
    others_finite: bool = True,
) -> None:
    """Raise DivergenceError unless ``loss`` and ``grad_norm`` are finite (one device sync).

    Args:
        loss: the scalar about to be (or just) back-propagated.
        grad_norm: its gradient's total norm, or None when there is none to check.
        phase: the training phase, for the message (e.g. 'teacher', 'student P2,P3 seed 0').
        step: the 1-based optimiser step being taken.
        terms: called only on failure: the loss's named parts, searched in order for the first
            non-finite one before 'total' and the gradient norm are blamed.
        others_finite: False when the caller already found a non-finite value among ``terms``
            (one the loss does not show yet, e.g. GradNorm's updated weights).
    """
    finite = torch.isfinite(loss.detach())
    if grad_norm is not None:
        finite = finite & torch.isfinite(grad_norm.detach()).to(finite.device)
    if others_finite and bool(finite):
        return
    named = [*terms(), ("total", loss)]
    if grad_norm is not None:
        named.append((GRADIENT_NORM, grad_norm))
    found = first_non_finite(named) or ("total", float(loss.detach()))
    raise DivergenceError(phase, step, found[0], found[1])


def objective_term_values(
    terms: ObjectiveTerms, kd_weight: float = 1.0
) -> list[tuple[str, torch.Tensor]]:
    """The named parts of a KD objective, root causes first: 'detection', 'kd_P2'..'kd_P5' (raw,
    normalised, then times ``kd_weight`` as they enter the total) and GradNorm's weights
    ('gradnorm_weight_detection', 'gradnorm_weight_P2'..)."""
    named: list[tuple[str, torch.Tensor]] = [("detection", terms.detection)]
    named += [(f"kd_{level}", terms.kd_raw[:, i]) for i, level in enumerate(LEVELS)]
    named += [(f"kd_{level}", terms.kd_normalised[:, i]) for i, level in enumerate(LEVELS)]
    weighted = kd_weight * terms.kd_normalised.mean(dim=0)
    named += [(f"kd_{level}", weighted[i]) for i, level in enumerate(LEVELS)]
    weight_names = ["detection", *LEVELS]
    named += [
        (f"gradnorm_weight_{weight_names[i]}", terms.level_weights[i])
        for i in range(min(len(weight_names), len(terms.level_weights)))
    ]
    return named


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
    teacher_cache: TeacherFeatureCache | None = None,
) -> torch.Tensor:
    """[B, 4] KD losses of a student output against the lazy teacher at ``mask`` (answered
    from ``teacher_cache`` when given)."""
    with_logits = objective.kd.needs_teacher_logits
    if teacher_cache is not None:
        teacher_pyramid = teacher_cache.pyramid(batch.images, mask, with_logits)
    else:
        teacher_pyramid = lazy_teacher_pyramid(teacher, batch.images, mask, with_logits)
    return batch_kd_losses(objective.kd, output, teacher_pyramid, batch)


def student_forward(
    student: PyramidDetector, batch: DetectionBatch, amp: bool = False
) -> DetectorOutput:
    """The student's training-mode forward of ``batch`` (with gradients), as a KD step runs it.

    A caller that chooses the step's levels from the student's own pyramid (a policy) runs this
    first, reads the features (detached) and hands the output to ``kd_training_step``, so the
    choice costs no extra forward.
    """
    student.train()
    with autocast_for(batch.images.device, amp):
        return student(batch.images)


def detached_features(output: DetectorOutput) -> dict[str, torch.Tensor]:
    """The pyramid features of a ``student_forward`` output, cut from its graph: what a policy
    observes, while the step still back-propagates through the output itself."""
    return {level: value.detach() for level, value in output.features.items()}


def detached_output(output: DetectorOutput) -> DetectorOutput:
    """A ``student_forward`` output cut from its graph (features and head outputs): what a
    selector that ranks samples by the step's own forward reads."""
    head = {
        level: type(value)(
            **{item.name: getattr(value, item.name).detach() for item in dataclasses.fields(value)}
        )
        for level, value in output.head.items()
    }
    return DetectorOutput(detached_features(output), head)


def kd_training_step(
    student: PyramidDetector,
    teacher: PyramidDetector,
    objective: DistillationObjective,
    optimizer: torch.optim.Optimizer,
    batch: DetectionBatch,
    mask: torch.Tensor,
    grad_clip: float = 0.0,
    amp: bool = False,
    *,
    phase: str = "student",
    step: int = 0,
    output: DetectorOutput | None = None,
    teacher_cache: TeacherFeatureCache | None = None,
) -> ObjectiveTerms:
    """Forward the student, the lazy teacher at ``mask`` ([B, 4] bool), KD + detection, update.

    Masked (sample, level) pairs cost nothing: the teacher computes only the selected pairs and
    their KD entries are exact zeros.

    Args:
        phase: names the run in a DivergenceError (e.g. 'student P2,P3 seed 0').
        step: the caller's 1-based step number, for the same message (0: not counted).
        output: this step's student forward of ``batch`` (``student_forward``), when the caller
            already ran it to choose ``mask`` from its features; None runs it here.
        teacher_cache: a memo of ``teacher``'s pyramid (``runtime.teacher_cache_gb``); None
            runs the lazy teacher.

    Raises:
        DivergenceError: the loss, one of its terms, GradNorm's weights or the gradient norm is
            not finite; the optimiser has not stepped (the weights are unchanged).
    """
    objective.train()
    mask = mask.to(device=batch.images.device, dtype=torch.bool)
    if output is None:
        output = student_forward(student, batch, amp)
    with autocast_for(batch.images.device, amp):
        detection = student.detection_loss(output, batch.boxes, batch.labels)["total"]
        kd_raw = _masked_kd(output, teacher, objective, batch, mask, teacher_cache)
    shared = last_shared_parameter(student) if objective.balancer is not None else None
    terms = objective(detection.float(), kd_raw.float(), mask, shared)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_and_measure_gradients(params, grad_clip)
    raise_if_diverged(
        terms.total,
        grad_norm,
        phase,
        step,
        lambda: objective_term_values(terms, objective.settings.weight),
        # GradNorm's weights (updated by this step) live on the CPU: no extra sync
        others_finite=bool(torch.isfinite(terms.level_weights).all()),
    )
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
