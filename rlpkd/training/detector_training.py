"""Phase 1: train a detector (the teacher) on the detection loss alone."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlpkd.config import ScheduleConfig
from rlpkd.data.coco import CocoDetectionDataset, build_dataloader
from rlpkd.models.detector import PyramidDetector
from rlpkd.runtime import autocast_for
from rlpkd.training.kd_step import clip_and_measure_gradients, raise_if_diverged
from rlpkd.training.optim import build_optimizer, warmup_cosine_schedule

__all__ = ["train_detector", "frozen_batchnorm_to_eval"]


def frozen_batchnorm_to_eval(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen in eval mode: its running
    statistics were frozen with them (a teacher started from torchvision's FCOS, ``teacher.init``)
    and must neither drift nor be replaced by batch statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def train_detector(
    model: PyramidDetector,
    dataset: CocoDetectionDataset,
    schedule: ScheduleConfig,
    device: torch.device,
    seed: int,
    writer: SummaryWriter | None = None,
    amp: bool = False,
    progress: bool = True,
    desc: str = "teacher",
) -> list[float]:
    """Train ``model`` in place for the schedule; returns the per-step detection losses.

    Raises:
        DivergenceError: a step's detection loss or its gradient norm is not finite; raised
            before that step's update, with ``desc`` as the phase.
    """
    model.to(device).train()
    frozen_batchnorm_to_eval(model)
    loader = build_dataloader(dataset, schedule.batch_size, shuffle=True, seed=seed, drop_last=True)
    total_steps = schedule.epochs * len(loader)
    optimizer = build_optimizer(model.parameters(), schedule)
    scheduler = warmup_cosine_schedule(optimizer, total_steps, schedule.warmup_steps)
    losses: list[float] = []
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, unit="step")
    for _ in range(schedule.epochs):
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with autocast_for(device, amp):
                output = model(batch.images)
                loss = model.detection_loss(output, batch.boxes, batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            grad_norm = clip_and_measure_gradients(model.parameters(), schedule.grad_clip)
            total = loss["total"]
            raise_if_diverged(
                total, grad_norm, desc, len(losses) + 1, lambda t=total: [("detection", t)]
            )
            optimizer.step()
            scheduler.step()
            value = loss["total"].item()
            losses.append(value)
            step = len(losses)
            if writer is not None and step % 10 == 0:
                writer.add_scalar(f"{desc}/losses/detection", value, step)
                writer.add_scalar(f"{desc}/charts/lr", scheduler.get_last_lr()[0], step)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    return losses
