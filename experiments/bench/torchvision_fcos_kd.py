"""The reference point of DESIGN §9: a plain torchvision FCOS KD loop (per-image target loops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from rlpkd.data.batch import DetectionBatch

__all__ = ["build_torchvision_fcos", "TorchvisionFCOSKDStep"]


def build_torchvision_fcos(depth: int, num_classes: int, image_size: int) -> FCOS:
    """torchvision's FCOS with a ResNet-``depth`` FPN backbone (P3-P7), no resizing."""
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{depth}",
        weights=None,
        trainable_layers=5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    return FCOS(backbone, num_classes, min_size=image_size, max_size=image_size)


class TorchvisionFCOSKDStep:
    """One student step: torchvision FCOS losses + MSE to the teacher's FPN features (all levels)."""

    def __init__(self, student: FCOS, teacher: FCOS, lr: float = 0.01) -> None:
        self.student = student.train()
        self.teacher = teacher.eval().requires_grad_(False)
        self.optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9)

    def __call__(self, batch: DetectionBatch) -> float:
        """Run one update; returns the total loss."""
        targets = [
            {"boxes": boxes[valid], "labels": labels[valid]}
            for boxes, labels, valid in zip(batch.boxes, batch.labels, batch.valid, strict=True)
        ]
        images, targets = self.student.transform(list(batch.images), targets)
        features = list(self.student.backbone(images.tensors).values())
        head_outputs = self.student.head(features)
        anchors = self.student.anchor_generator(images, features)
        num_per_level = [f.size(2) * f.size(3) for f in features]
        losses = self.student.compute_loss(targets, head_outputs, anchors, num_per_level)
        with torch.no_grad():
            teacher_features = list(self.teacher.backbone(images.tensors).values())
        kd = sum(F.mse_loss(s, t) for s, t in zip(features, teacher_features, strict=True))
        total = sum(losses.values()) + kd
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return float(total.detach())
