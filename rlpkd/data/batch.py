"""The batch type every model, loss and trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DetectionBatch"]


@dataclass
class DetectionBatch:
    """A padded batch of images with their ground-truth boxes.

    Attributes:
        images: [B, 3, H, W] float in [0, 1] (models normalise internally).
        boxes: [B, M, 4] xyxy in input-pixel coordinates; padding rows are zeros.
        labels: [B, M] long contiguous class index in [0, K); -1 marks padding.
        image_ids: [B] long COCO image ids.
        scales: [B] float, input pixels per original-image pixel (to map predictions back).
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    image_ids: torch.Tensor
    scales: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """[B, M] bool, True for real (non-padding) boxes."""
        return self.labels >= 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DetectionBatch:
        """The same batch on ``device``."""
        return DetectionBatch(
            images=self.images.to(device, non_blocking=non_blocking),
            boxes=self.boxes.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            image_ids=self.image_ids.to(device, non_blocking=non_blocking),
            scales=self.scales.to(device, non_blocking=non_blocking),
        )

    def select(self, index: torch.Tensor) -> DetectionBatch:
        """The sub-batch at ``index`` (a [n] long tensor of sample positions)."""
        return DetectionBatch(
            images=self.images[index],
            boxes=self.boxes[index],
            labels=self.labels[index],
            image_ids=self.image_ids[index],
            scales=self.scales[index],
        )
