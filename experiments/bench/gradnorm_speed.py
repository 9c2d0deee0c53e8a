"""What GradNorm costs: the all-level KD step with and without it, side by side in one run.

GradNorm (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018; ``rlpkd.distill.gradnorm``) needs the gradient norm of every
weighted task loss at the student's last shared layer each step, on top of the step itself.
"""

from __future__ import annotations

import dataclasses

import torch

from experiments.bench.kd_step_speed import StepBenchSettings, build_kd_bench
from rlpkd.config import DistillConfig
from rlpkd.distill.objective import DistillationObjective
from rlpkd.levels import LEVELS, levels_to_mask
from rlpkd.training.kd_step import kd_training_step

__all__ = ["benchmark_gradnorm"]


def benchmark_gradnorm(settings: StepBenchSettings) -> dict[str, float]:
    """ms per all-level KD step without and with GradNorm (same models, batch and optimiser kind)
    and their ratio (each timed over ``settings.steps`` calls after its warm-up)."""
    bench = build_kd_bench(settings)
    device, batch = settings.device, bench.batch
    mask = levels_to_mask(LEVELS).expand(settings.batch_size, len(LEVELS)).clone()
    balanced = DistillationObjective(
        dataclasses.replace(DistillConfig(loss=settings.kd_loss), gradnorm=True),
        settings.student_spec.fpn_channels,
        settings.teacher_spec.fpn_channels,
        settings.num_classes,
    ).to(device)
    balanced_optimizer = torch.optim.SGD(
        [*bench.student.parameters(), *balanced.kd.parameters()], lr=1e-4
    )

    def plain() -> None:
        bench.kd_step(mask)

    def with_gradnorm() -> None:
        kd_training_step(
            bench.student, bench.teacher, balanced, balanced_optimizer, batch, mask, 0.0
        )

    plain_s = settings.seconds_per_step(plain)
    gradnorm_s = settings.seconds_per_step(with_gradnorm)
    return {
        "all_levels_ms": 1e3 * plain_s,
        "all_levels_gradnorm_ms": 1e3 * gradnorm_s,
        "gradnorm_vs_plain": gradnorm_s / plain_s,
    }
