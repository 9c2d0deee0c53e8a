"""Optimisers and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from rlpkd.config import ScheduleConfig

__all__ = ["build_optimizer", "warmup_cosine_schedule"]


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], schedule: ScheduleConfig
) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW as the schedule says."""
    params = [p for p in parameters if p.requires_grad]
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
        )
    return torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` then cosine decay to 0 at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
