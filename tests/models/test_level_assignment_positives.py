"""Every embedded box is trained on: at the default level thresholds each box of a generated
``per-image`` dataset at the default image size gets at least one positive FCOS location.

FCOS makes location p of level l positive for a box when p lies strictly inside the box, within
``center_radius`` (1.5) strides of its centre, and the largest of p's (l, t, r, b) distances falls
in l's range. With ranges only 2x each level's stride, (8, 16, 32), the locations near a box's
centre can all miss their level's range while the next level's coarser grid has no location
inside the box whose distance exceeds the boundary: 1.3% (per-image) to 1.7% (mixed) of the
boxes got no positive at all.
The check uses the platform's own loader and ``assign_fcos_targets`` (not a re-implementation).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlpkd.config import load_config
from rlpkd.data.coco import CocoDetectionDataset
from rlpkd.data.synthetic import PER_IMAGE, generate_embedded_dataset
from rlpkd.models.factory import build_student
from rlpkd.models.fcos_loss import assign_fcos_targets, level_points

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO_ROOT / "configs" / "default.yaml")
OLD_THRESHOLDS = (8.0, 16.0, 32.0)


@pytest.fixture(scope="module")
def padded_boxes(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [N, M, 4] (xyxy, input pixels) of 200 default-size per-image images, each image
    also horizontally flipped (training flips), and [N, M] box indices (-1 for padding)."""
    data = CONFIG.data
    assert data.regime == PER_IMAGE
    root = generate_embedded_dataset(
        tmp_path_factory.mktemp("positives"), 160, 40, data.image_size, data.seed, PER_IMAGE
    )
    size = data.image_size
    per_image = []
    for split in ("train", "val"):
        dataset = CocoDetectionDataset(
            root / "images" / split, root / "annotations" / f"{split}.json", size, train=False
        )
        for index in range(len(dataset)):
            boxes = dataset[index].boxes
            flipped = torch.stack(
                [size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1
            )
            per_image += [boxes, flipped]
    most = max(len(b) for b in per_image)
    boxes = torch.zeros(len(per_image), most, 4)
    index = torch.full((len(per_image), most), -1, dtype=torch.long)
    for i, image_boxes in enumerate(per_image):
        boxes[i, : len(image_boxes)] = image_boxes
        index[i, : len(image_boxes)] = torch.arange(len(image_boxes))
    return boxes, index


def boxes_without_positives(
    boxes: torch.Tensor, box_index: torch.Tensor, thresholds: tuple[float, float, float]
) -> int:
    """How many real boxes no location is assigned to (the box index stands in for the label,
    so each positive location names the box it was matched to)."""
    student = build_student(CONFIG, 6).eval()
    size = CONFIG.data.image_size
    with torch.no_grad():
        head = student(torch.zeros(1, 3, size, size)).head
    sizes = [tuple(out.class_logits.shape[-2:]) for out in head.values()]
    points, point_level = level_points(sizes, torch.device("cpu"))
    targets = assign_fcos_targets(points, point_level, boxes, box_index, thresholds)
    missing = 0
    for j in range(box_index.shape[1]):
        real = box_index[:, j] >= 0
        has_positive = (targets.labels == j).any(dim=1)
        missing += int((real & ~has_positive).sum())
    return missing


def test_every_box_gets_a_positive_location_at_the_default_thresholds(
    padded_boxes: tuple[torch.Tensor, torch.Tensor],
) -> None:
    boxes, box_index = padded_boxes
    assert int((box_index >= 0).sum()) > 800
    assert boxes_without_positives(boxes, box_index, tuple(CONFIG.data.level_thresholds)) == 0


def test_sweep_uses_the_same_thresholds() -> None:
    sweep = load_config(REPO_ROOT / "configs" / "sweep.yaml")
    assert tuple(sweep.data.level_thresholds) == tuple(CONFIG.data.level_thresholds)


def test_the_old_thresholds_leave_boxes_without_positives(
    padded_boxes: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """The check can fail: on the same boxes, 2x-stride ranges miss some."""
    boxes, box_index = padded_boxes
    assert boxes_without_positives(boxes, box_index, OLD_THRESHOLDS) > 0
