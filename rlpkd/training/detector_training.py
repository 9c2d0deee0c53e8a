"""Phase 1: train a detector (the teacher) on the detection loss alone."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlpkd.config import ScheduleConfig
from rlpkd.data.coco import CocoDetectionDataset, build_dataloader
from rlpkd.models.detector import PyramidDetector
from rlpkd.training.optim import build_optimizer, warmup_cosine_schedule
from rlpkd.training.runtime import autocast_for

__all__ = ["train_detector"]


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
    """Train ``model`` in place for the schedule; returns the per-step detection losses."""
    model.to(device).train()
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
            if schedule.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
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
