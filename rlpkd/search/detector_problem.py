"""The gated-KD bilevel problem on the real detector, and the setup DARTS and GDAS share.

``DetectorGateProblem`` is a ``GatedDistillProblem`` (DARTS: Liu, Simonyan, Yang, ICLR 2019;
GDAS: Dong & Yang, CVPR 2019): the student's training loss is its FCOS detection loss plus
``sum_l g_l * weight * mean_b KD[b, l] / scale_l`` (the objective's running per-level scale), and
the validation objective is the student's detection loss on a held-out batch. The teacher runs at
all four levels (every gate needs its level's KD), once per training batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from rlpkd.data.batch import DetectionBatch
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.masked import batch_kd_losses
from rlpkd.distill.objective import DistillationObjective
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.lazy_pyramid import TeacherPyramid, lazy_teacher_pyramid
from rlpkd.runtime import autocast_for, seed_everything
from rlpkd.search.bilevel import BilevelInputs, BilevelSettings
from rlpkd.search.context import SearchContext
from rlpkd.search.result import SearchCost
from rlpkd.training.distill_run import new_student_training

__all__ = [
    "DetectorGateProblem",
    "GradientSearchSetup",
    "build_gradient_search",
    "cycle_batches",
    "gradient_search_cost",
    "GradientLoop",
    "run_gradient_search",
]

GradientLoop = Callable[..., tuple[Tensor, list[dict[str, Any]]]]
"""A gradient search's loop (``darts_gate_loop``, ``gdas_subset_loop``): ``(inputs, steps, *,
progress, ...)`` -> (final architecture logits, trace)."""


class DetectorGateProblem:
    """Gated per-level KD on a PyramidDetector student (the lower level of DARTS / GDAS).

    - ``train_loss(batch, g)``: detection + ``sum_l g_l * weight * mean_b KD_norm[b, l]``, where
      ``KD_norm`` divides by the objective's running per-level scale (when
      ``distill.normalise``). The scale is updated once per training batch, on the batch's first
      ``train_loss`` call, i.e. at the real (not virtual) weights. GradNorm is not used: the
      gates are the level weights.
    - ``val_loss(batch)``: the student's detection loss on a held-out batch, with the student in
      train mode (BatchNorm uses batch statistics, as in every training-loss pass; the running
      statistics are restored after a virtual step via ``buffers()``).
    - The teacher pyramid of a training batch is computed once (all samples, all levels) and
      cached until a different batch object arrives.

    Args:
        student: the student being searched with (put in train mode).
        teacher: the frozen teacher.
        objective: supplies the KD loss (``.kd``), its adapters and the running scale.
        amp: bf16 autocast on CUDA. Off by default: the finite difference of DARTS eq. 8 moves
            all the weights together by a norm of eps (0.01), a far smaller relative change than
            bf16 resolves (about 4e-3), so under bf16 the gates' gradient is mostly rounding.
    """

    def __init__(
        self,
        student: PyramidDetector,
        teacher: PyramidDetector,
        objective: DistillationObjective,
        amp: bool = False,
    ) -> None:
        self.student = student.train()
        self.teacher = teacher
        self.objective = objective.train()
        self.amp = amp
        self._batch: DetectionBatch | None = None
        self._pyramid: TeacherPyramid = {}

    def parameters(self) -> list[Tensor]:
        """Student weights and the KD loss's adapters."""
        params = [*self.student.parameters(), *self.objective.trainable_parameters()]
        return [p for p in params if p.requires_grad]

    def buffers(self) -> list[Tensor]:
        """BatchNorm statistics of the student and the KD loss (not the running KD scale)."""
        return [*self.student.buffers(), *self.objective.kd.buffers()]

    def _teacher_pyramid(self, batch: DetectionBatch) -> tuple[TeacherPyramid, bool]:
        if batch is self._batch:
            return self._pyramid, False
        mask = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool, device=batch.images.device)
        with autocast_for(batch.images.device, self.amp):
            self._pyramid = lazy_teacher_pyramid(
                self.teacher, batch.images, mask, self.objective.kd.needs_teacher_logits
            )
        self._batch = batch
        return self._pyramid, True

    def level_kd(self, batch: DetectionBatch) -> tuple[Tensor, Tensor]:
        """(detection loss, [4] weighted, normalised batch-mean KD per level) at the current w."""
        pyramid, first_visit = self._teacher_pyramid(batch)
        with autocast_for(batch.images.device, self.amp):
            output = self.student(batch.images)
            detection = self.student.detection_loss(output, batch.boxes, batch.labels)["total"]
            kd_raw = batch_kd_losses(self.objective.kd, output, pyramid, batch)
        kd_raw = kd_raw.float()
        settings = self.objective.settings
        if settings.normalise:
            mask = torch.ones_like(kd_raw, dtype=torch.bool)
            if first_visit:
                self.objective.scale.update(kd_raw.detach(), mask)
            kd_raw = self.objective.scale.normalise(kd_raw, mask)
        return detection.float(), settings.weight * kd_raw.mean(dim=0)

    def train_loss(self, batch: DetectionBatch, gates: Tensor) -> Tensor:
        """Detection + sum_l gates_l * KD_l on a training batch."""
        detection, kd = self.level_kd(batch)
        return detection + (gates.to(kd) * kd).sum()

    def val_loss(self, batch: DetectionBatch) -> Tensor:
        """The student's detection loss on a held-out batch."""
        with autocast_for(batch.images.device, self.amp):
            output = self.student(batch.images)
            detection = self.student.detection_loss(output, batch.boxes, batch.labels)["total"]
        return detection.float()


def cycle_batches(loader: DataLoader, device: torch.device) -> Iterator[DetectionBatch]:
    """Batches of ``loader`` on ``device``, epoch after epoch (each epoch reshuffled by the
    loader's own seeded generator)."""
    while True:
        for batch in loader:
            yield batch.to(device, non_blocking=True)


@dataclass(frozen=True, kw_only=True)
class GradientSearchSetup(BilevelInputs):
    """What a gradient search (DARTS, GDAS) trains with on the real detector: ``BilevelInputs``
    with the detector's gated-KD problem, the student's optimiser (student + KD adapters,
    ``student_schedule``), warm-up + cosine over the search's steps, endless seeded batches of
    the search-train and the held-out part, the settings from ``search`` and
    ``student_schedule``, and each stream's batch size."""

    train_batch_size: int
    """Images per batch of the training stream (full batches only)."""
    val_batch_size: int
    """Images per batch of the held-out stream (full batches only)."""


def build_gradient_search(context: SearchContext, steps: int, phase: str) -> GradientSearchSetup:
    """A fresh seeded student, objective, optimiser and data streams for ``steps`` search steps
    (in fp32 whatever ``runtime.amp`` says); ``phase`` names the method in a DivergenceError
    (with the seed appended)."""
    seed_everything(context.seed)
    config, datasets, device = context.config, context.datasets, context.device
    schedule = config.student_schedule
    training = new_student_training(config, datasets.num_classes, steps, device)
    student, objective = training.student, training.objective
    optimizer, scheduler = training.optimizer, training.scheduler
    train_size = min(schedule.batch_size, len(datasets.train))
    val_size = min(schedule.batch_size, len(datasets.val))
    train = build_dataloader(datasets.train, train_size, True, context.seed, drop_last=True)
    val = build_dataloader(datasets.val, val_size, True, context.seed + 1, drop_last=True)
    search = config.search
    return GradientSearchSetup(
        # fp32 even when runtime.amp is on: see DetectorGateProblem's ``amp``
        problem=DetectorGateProblem(student, context.teacher, objective, amp=False),
        optimizer=optimizer,
        scheduler=scheduler,
        train_batches=cycle_batches(train, device),
        val_batches=cycle_batches(val, device),
        settings=BilevelSettings(
            alpha_lr=search.alpha_lr,
            xi=search.unrolled_lr if search.unrolled_lr > 0 else None,
            phase=f"{phase} (seed {context.seed})",
            eps=search.finite_difference_eps,
            lam=search.lam,
            grad_clip=schedule.grad_clip,
        ),
        train_batch_size=train_size,
        val_batch_size=val_size,
    )


def gradient_search_cost(
    context: SearchContext, setup: GradientSearchSetup, start_time: float, steps: int
) -> SearchCost:
    """The cost of ``steps`` gradient-search steps: the teacher ran once per training batch, at
    all levels.

    ``student_images`` counts every student pass over a batch: per step the training batch four
    times (virtual step, w + r v, w - r v, real step) and the held-out batch once.
    """
    train_images = steps * setup.train_batch_size
    val_images = steps * setup.val_batch_size
    return SearchCost(
        wall_time_s=time.perf_counter() - start_time,
        device=context.device.type,
        kd_gflops=train_images * context.flops.kd_flops(LEVELS) / 1e9,
        student_images=4 * train_images + val_images,
        evaluations=steps,
    )


def run_gradient_search(
    context: SearchContext, phase: str, loop: GradientLoop, **method_options: Any
) -> tuple[Tensor, list[dict[str, Any]], SearchCost]:
    """``loop`` for ``search.gradient_steps`` steps on a fresh ``build_gradient_search`` setup,
    with the method's own keyword ``method_options``; the final logits, the trace and the cost."""
    steps = context.config.search.gradient_steps
    start = time.perf_counter()
    setup = build_gradient_search(context, steps, phase)
    logits, trace = loop(setup, steps, progress=context.progress, **method_options)
    return logits, trace, gradient_search_cost(context, setup, start, steps)
