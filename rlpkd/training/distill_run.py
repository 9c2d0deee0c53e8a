"""A student trained with per-sample level masks from a LevelSelector, then evaluated."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.objective import DistillationObjective
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.training.kd_step import kd_training_step
from rlpkd.training.level_selection import LevelSelector
from rlpkd.training.model_factory import build_student
from rlpkd.training.optim import build_optimizer, warmup_cosine_schedule
from rlpkd.training.runtime import seed_everything

__all__ = ["DistillationStats", "distill_student"]

_SUBSET_BITS = torch.tensor([1 << i for i in range(NUM_LEVELS)])


@dataclass
class DistillationStats:
    """What a distillation run did, for the metrics file."""

    images: int = 0
    kd_flops: float = 0.0
    level_counts: list[int] = field(default_factory=lambda: [0] * NUM_LEVELS)
    train_time_s: float = 0.0

    @property
    def kd_gflops_per_image(self) -> float:
        """Counted teacher + KD GFLOPs per training image."""
        return self.kd_flops / max(self.images, 1) / 1e9

    @property
    def selection_rates(self) -> dict[str, float]:
        """Fraction of training samples that distilled each level."""
        return {
            level: count / max(self.images, 1)
            for level, count in zip(LEVELS, self.level_counts, strict=True)
        }


def distill_student(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    selector: LevelSelector,
    seed: int,
    device: torch.device,
    subset_kd_flops: torch.Tensor,
    writer: SummaryWriter | None = None,
    progress: bool = True,
) -> tuple[PyramidDetector, DistillationObjective, DistillationStats]:
    """Train a fresh student for ``config.student_schedule`` with KD at the selector's levels.

    Args:
        subset_kd_flops: [16] kd FLOPs per image of each level subset (``FlopsModel.table``
            order, index bit i = LEVELS[i]); counted per sample as the run goes.
    """
    seed_everything(seed)
    schedule = config.student_schedule
    student = build_student(config, datasets.num_classes).to(device)
    objective = DistillationObjective(
        config.distill,
        config.student.fpn_channels,
        config.teacher.fpn_channels,
        datasets.num_classes,
    ).to(device)
    loader = build_dataloader(
        datasets.train, schedule.batch_size, shuffle=True, seed=seed, drop_last=True
    )
    total_steps = schedule.epochs * len(loader)
    optimizer = build_optimizer(
        [*student.parameters(), *objective.trainable_parameters()], schedule
    )
    scheduler = warmup_cosine_schedule(optimizer, total_steps, schedule.warmup_steps)
    stats = DistillationStats()
    amp = config.runtime.amp
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"student {selector.name}", disable=not progress)
    step = 0
    for _ in range(schedule.epochs):
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            mask = selector.select(batch, step / max(total_steps, 1)).cpu()
            terms = kd_training_step(
                student, teacher, objective, optimizer, batch, mask, schedule.grad_clip, amp
            )
            scheduler.step()
            step += 1
            subset = (mask.long() * _SUBSET_BITS).sum(dim=1)
            stats.kd_flops += float(subset_kd_flops[subset].sum())
            stats.images += len(batch)
            for i, count in enumerate(mask.sum(dim=0).tolist()):
                stats.level_counts[i] += int(count)
            if writer is not None and step % 10 == 0:
                writer.add_scalar("losses/detection", float(terms.detection), step)
                kd_means = terms.kd_raw.sum(0) / mask.sum(0).clamp(min=1)
                for i, level in enumerate(LEVELS):
                    writer.add_scalar(f"losses/kd_{level}", float(kd_means[i]), step)
                    writer.add_scalar(
                        f"gradnorm/weight_{level}", float(terms.level_weights[i + 1]), step
                    )
                writer.add_scalar("gradnorm/weight_detection", float(terms.level_weights[0]), step)
                writer.add_scalar("charts/lr", scheduler.get_last_lr()[0], step)
            bar.update(1)
            bar.set_postfix(det=f"{float(terms.detection):.3f}")
    bar.close()
    stats.train_time_s = time.perf_counter() - start
    return student, objective, stats
