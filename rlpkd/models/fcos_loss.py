"""Batched FCOS target assignment and losses (Tian et al., ICCV 2019), no per-image Python loops.

A location at level l is positive for a box when it lies in the box's centre region (radius
``center_radius`` strides) and the largest of its (l, t, r, b) regression distances falls in the
level's range; among several boxes the smallest one wins. Losses: sigmoid focal loss for classes,
GIoU for boxes, BCE for centerness, each normalised by the number of positives in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from rlpkd.levels import LEVEL_STRIDES, LEVELS
from rlpkd.models.head import LevelHeadOutput

__all__ = [
    "FCOSTargets",
    "level_bounds",
    "box_pyramid_levels",
    "grid_points",
    "level_points",
    "assign_fcos_targets",
    "fcos_losses",
    "flatten_head_outputs",
    "decode_distances",
]


def level_bounds(thresholds: tuple[float, float, float]) -> list[tuple[float, float]]:
    """Regression-distance ranges of P2..P5 from the three boundaries between them (pixels)."""
    edges = [0.0, *thresholds, float("inf")]
    return [(edges[i], edges[i + 1]) for i in range(len(LEVELS))]


def box_pyramid_levels(boxes: torch.Tensor, thresholds: tuple[float, float, float]) -> torch.Tensor:
    """The level index (0=P2 .. 3=P5) each xyxy box is assigned to by the FCOS range rule.

    At the box centre the largest regression distance is max(w, h) / 2, so that value decides.
    """
    half_extent = torch.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]) / 2
    edges = torch.tensor(thresholds, dtype=half_extent.dtype, device=half_extent.device)
    return torch.bucketize(half_extent, edges, right=False)


def grid_points(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """Centres (x, y) in input pixels of the locations of one [height, width] level: [H*W, 2]."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def level_points(
    sizes: list[tuple[int, int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of every location of P2..P5 (sizes in that order) and each location's level index."""
    points, point_level = [], []
    for index, (level, (height, width)) in enumerate(zip(LEVELS, sizes, strict=True)):
        points.append(grid_points(height, width, LEVEL_STRIDES[level], device))
        point_level.append(torch.full((height * width,), index, device=device, dtype=torch.long))
    return torch.cat(points), torch.cat(point_level)


@dataclass
class FCOSTargets:
    """Per-location training targets for a batch.

    Attributes:
        labels: [B, P] contiguous class index of the matched box, -1 for background.
        boxes: [B, P, 4] xyxy of the matched box (undefined where labels == -1).
    """

    labels: torch.Tensor
    boxes: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        """[B, P] bool, True where a location is matched to a box."""
        return self.labels >= 0


def assign_fcos_targets(
    points: torch.Tensor,
    point_level: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    thresholds: tuple[float, float, float],
    center_radius: float = 1.5,
) -> FCOSTargets:
    """Assign each location of each image to at most one ground-truth box (batched)."""
    batch, num_boxes = labels.shape
    num_points = points.shape[0]
    if num_boxes == 0:
        return FCOSTargets(
            labels=labels.new_full((batch, num_points), -1),
            boxes=boxes.new_zeros((batch, num_points, 4)),
        )
    bounds = torch.tensor(level_bounds(thresholds), device=points.device)
    strides = torch.tensor([LEVEL_STRIDES[level] for level in LEVELS], device=points.device)
    low, high = bounds[point_level, 0], bounds[point_level, 1]
    point_stride = strides[point_level].float()

    px = points[None, :, None, 0]
    py = points[None, :, None, 1]
    x0, y0, x1, y1 = (boxes[:, None, :, i] for i in range(4))
    ltrb = torch.stack([px - x0, py - y0, x1 - px, y1 - py], dim=-1)  # [B, P, M, 4]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    radius = center_radius * point_stride[None, :, None]
    in_center = (
        ((px - cx).abs() < radius) & ((py - cy).abs() < radius) & (ltrb.min(dim=-1).values > 0)
    )
    max_distance = ltrb.max(dim=-1).values
    in_range = (max_distance > low[None, :, None]) & (max_distance <= high[None, :, None])
    candidate = in_center & in_range & (labels >= 0)[:, None, :]
    area = ((x1 - x0) * (y1 - y0)).expand(-1, num_points, -1)
    area = torch.where(candidate, area, torch.full_like(area, float("inf")))
    best_area, best_box = area.min(dim=-1)  # [B, P]
    matched = torch.isfinite(best_area)
    target_labels = torch.gather(labels, 1, best_box)
    target_labels = torch.where(matched, target_labels, torch.full_like(target_labels, -1))
    target_boxes = torch.gather(boxes, 1, best_box[..., None].expand(-1, -1, 4))
    return FCOSTargets(labels=target_labels, boxes=target_boxes)


def flatten_head_outputs(
    outputs: dict[str, LevelHeadOutput],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate P2..P5 outputs to [B, P, K] logits, [B, P, 4] distances (in strides), [B, P]."""

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2).transpose(1, 2)

    logits = torch.cat([flat(outputs[level].class_logits) for level in LEVELS], dim=1)
    distances = torch.cat([flat(outputs[level].box_distances) for level in LEVELS], dim=1)
    centerness = torch.cat([flat(outputs[level].centerness_logits) for level in LEVELS], dim=1)
    return logits, distances, centerness[..., 0]


def decode_distances(
    points: torch.Tensor, point_level: torch.Tensor, distances: torch.Tensor
) -> torch.Tensor:
    """xyxy boxes [B, P, 4] from (l, t, r, b) distances given in units of each level's stride."""
    strides = torch.tensor([LEVEL_STRIDES[level] for level in LEVELS], device=points.device)
    scaled = distances * strides[point_level].to(distances.dtype)[None, :, None]
    return torch.cat([points[None] - scaled[..., :2], points[None] + scaled[..., 2:]], dim=-1)


def fcos_losses(
    outputs: dict[str, LevelHeadOutput],
    boxes: torch.Tensor,
    labels: torch.Tensor,
    thresholds: tuple[float, float, float],
    center_radius: float = 1.5,
) -> dict[str, torch.Tensor]:
    """FCOS detection losses for a batch.

    Returns scalars ``classification``, ``box``, ``centerness``, ``total`` and ``per_sample`` [B]
    (each sample's share of ``total``; they sum to it).
    """
    sizes = [tuple(outputs[level].class_logits.shape[-2:]) for level in LEVELS]
    logits, distances, centerness = flatten_head_outputs(outputs)
    points, point_level = level_points(sizes, logits.device)
    targets = assign_fcos_targets(points, point_level, boxes, labels, thresholds, center_radius)
    positive = targets.positive
    num_positive = positive.sum().clamp(min=1).float()

    one_hot = F.one_hot(targets.labels.clamp(min=0), logits.shape[-1]).to(logits.dtype)
    one_hot = one_hot * positive[..., None]
    cls = sigmoid_focal_loss(logits.float(), one_hot.float(), reduction="none").sum(dim=(1, 2))

    pred_boxes = decode_distances(points, point_level, distances.float())
    giou = generalized_box_iou_loss(pred_boxes, targets.boxes.float(), reduction="none")
    box = (giou * positive).sum(dim=1)

    ltrb = torch.cat(
        [points[None] - targets.boxes[..., :2], targets.boxes[..., 2:] - points[None]], dim=-1
    ).clamp(min=1e-6)
    lr, tb = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    center_target = torch.sqrt(
        (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    )
    ctr = F.binary_cross_entropy_with_logits(
        centerness.float(), center_target.float(), reduction="none"
    )
    ctr = (ctr * positive).sum(dim=1)

    per_sample = (cls + box + ctr) / num_positive
    return {
        "classification": cls.sum() / num_positive,
        "box": box.sum() / num_positive,
        "centerness": ctr.sum() / num_positive,
        "total": per_sample.sum(),
        "per_sample": per_sample,
    }
