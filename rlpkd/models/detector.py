"""ResNet + FPN (P2-P5) + FCOS head: the teacher and student detectors."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, batched_nms

from rlpkd.config import ModelConfig
from rlpkd.levels import LEVEL_STRIDES, LEVELS
from rlpkd.models.backbone import ResNetBody, build_resnet
from rlpkd.models.fcos_loss import fcos_losses, grid_points
from rlpkd.models.head import FCOSHead, LevelHeadOutput

__all__ = ["PyramidDetector", "DetectorOutput", "Detections", "build_detector"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DetectorOutput:
    """A detector's forward pass: FPN features and head outputs at every level."""

    features: dict[str, torch.Tensor]
    head: dict[str, LevelHeadOutput]

    @property
    def class_logits(self) -> dict[str, torch.Tensor]:
        """Per-level class logits [B, K, H, W]."""
        return {level: out.class_logits for level, out in self.head.items()}


@dataclass
class Detections:
    """Detections of one image, in input-pixel coordinates."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class PyramidDetector(nn.Module):
    """ResNet body -> torchvision FeaturePyramidNetwork (P2..P5) -> shared FCOS head."""

    def __init__(
        self,
        spec: ModelConfig,
        num_classes: int,
        level_thresholds: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.level_thresholds = tuple(float(t) for t in level_thresholds)
        self.body = ResNetBody(build_resnet(spec.depth, spec.width, spec.pretrained))
        self.fpn = FeaturePyramidNetwork(self.body.out_channels, spec.fpn_channels)
        self.head = FCOSHead(spec.fpn_channels, num_classes, spec.head_convs)
        self.register_buffer("pixel_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> ImageNet-normalised input."""
        return (images - self.pixel_mean) / self.pixel_std

    def pyramid(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The full FPN: {P2..P5: [B, C, H, W]} (images in [0, 1])."""
        stages = self.body(self.normalise(images))
        fpn_out = self.fpn(OrderedDict(zip(LEVELS, stages, strict=True)))
        return dict(fpn_out)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """FPN features and head outputs at P2..P5."""
        features = self.pyramid(images)
        return DetectorOutput(features, {level: self.head(f) for level, f in features.items()})

    def detection_loss(
        self, output: DetectorOutput, boxes: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """FCOS losses of ``output`` against padded ground truth (see ``fcos_losses``)."""
        return fcos_losses(output.head, boxes, labels, self.level_thresholds)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        max_detections: int = 100,
        candidates_per_level: int = 1000,
    ) -> list[Detections]:
        """Post-processed detections per image (score = sqrt(class prob x centerness))."""
        output = self(images)
        all_boxes, all_scores, all_labels = [], [], []
        for level, head in output.head.items():
            stride = LEVEL_STRIDES[level]
            height, width = head.class_logits.shape[-2:]
            points = grid_points(height, width, stride, images.device)
            probs = torch.sigmoid(head.class_logits.flatten(2).transpose(1, 2).float())
            ctr = torch.sigmoid(head.centerness_logits.flatten(2).transpose(1, 2).float())
            scores = torch.sqrt(probs * ctr).flatten(1)  # [B, HW*K]
            distances = head.box_distances.flatten(2).transpose(1, 2).float() * stride
            boxes = torch.cat(
                [points[None] - distances[..., :2], points[None] + distances[..., 2:]], -1
            )
            top_scores, top_index = scores.topk(min(candidates_per_level, scores.shape[1]), dim=1)
            location = top_index // self.num_classes
            all_scores.append(top_scores)
            all_labels.append(top_index % self.num_classes)
            all_boxes.append(torch.gather(boxes, 1, location[..., None].expand(-1, -1, 4)))
        scores = torch.cat(all_scores, 1)
        labels = torch.cat(all_labels, 1)
        boxes = torch.cat(all_boxes, 1)
        height, width = images.shape[-2:]
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
        results = []
        for i in range(images.shape[0]):
            keep = scores[i] > score_threshold
            b, s, lab = boxes[i][keep], scores[i][keep], labels[i][keep]
            kept = batched_nms(b, s, lab, nms_iou)[:max_detections]
            results.append(Detections(b[kept], s[kept], lab[kept]))
        return results


def build_detector(
    spec: ModelConfig, num_classes: int, level_thresholds: tuple[float, float, float]
) -> PyramidDetector:
    """A fresh detector of the given architecture."""
    return PyramidDetector(spec, num_classes, level_thresholds)
