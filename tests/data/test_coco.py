"""CocoDetectionDataset: letterbox geometry, labels, flips, errors, collation and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlpkd.data.batch import DetectionBatch
from rlpkd.data.coco import CocoDetectionDataset, build_dataloader, collate_detection
from rlpkd.data.synthetic import generate_embedded_dataset
from rlpkd.errors import DataError
from tests.data.coco_fixture import box_annotation

RED = (255, 0, 0)


def write_dataset(root: Path, images: list[dict], annotations: list[dict]) -> Path:
    """A COCO file with categories 3 and 7 (deliberately non-contiguous)."""
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(document))
    return path


def wide_image_dataset(root: Path) -> Path:
    """One 200×100 grey image with a red 40×20 block at x=10, y=30; plus one image without boxes."""
    pixels = np.full((100, 200, 3), 128, dtype=np.uint8)
    pixels[30:50, 10:50] = RED
    Image.fromarray(pixels).save(root / "wide.png")
    Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8)).save(root / "empty.png")
    return write_dataset(
        root,
        images=[
            {"id": 5, "file_name": "wide.png", "width": 200, "height": 100},
            {"id": 9, "file_name": "empty.png", "width": 50, "height": 50},
        ],
        annotations=[
            box_annotation(1, 5, 7, [10, 30, 40, 20]),
            box_annotation(2, 5, 3, [0, 0, 20, 20], iscrowd=1),
            box_annotation(3, 5, 3, [60, 60, 0.5, 10]),
        ],
    )


def test_letterbox_scales_boxes_and_pads_bottom_right(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(tmp_path, wide_image_dataset(tmp_path), 64, train=False)
    assert dataset.image_ids == [5, 9]
    item = dataset[0]
    assert item.image.shape == (3, 64, 64) and item.image.dtype == torch.float32
    assert item.scale == pytest.approx(0.32)
    # Crowd and sub-pixel boxes are dropped; category 7 is the second sorted id -> label 1.
    assert item.labels.tolist() == [1]
    assert torch.allclose(item.boxes, torch.tensor([[3.2, 9.6, 16.0, 16.0]]))
    assert item.image[:, 32:, :].abs().sum() == 0  # padding below the 64×32 content
    red_pixel = item.image[:, 12, 8]
    assert torch.allclose(red_pixel, torch.tensor([1.0, 0.0, 0.0]), atol=0.02)


def test_class_mapping_properties(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(tmp_path, wide_image_dataset(tmp_path), 64, train=False)
    assert dataset.num_classes == 2
    assert dataset.category_ids == [3, 7]
    assert dataset.class_names == ["three", "seven"]
    assert set(dataset.coco.getImgIds()) == {5, 9}


def test_image_without_boxes_collates_with_padding(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(tmp_path, wide_image_dataset(tmp_path), 64, train=False)
    empty = dataset[1]
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)
    batch = collate_detection([empty])
    assert batch.boxes.shape == (1, 1, 4) and batch.labels.tolist() == [[-1]]
    batch = collate_detection([dataset[0], empty])
    assert isinstance(batch, DetectionBatch)
    assert batch.images.shape == (2, 3, 64, 64)
    assert batch.valid.tolist() == [[True], [False]]
    assert batch.image_ids.tolist() == [5, 9]
    assert batch.scales.tolist() == pytest.approx([0.32, 1.28])


def test_flip_moves_boxes_with_the_image_content(tmp_path: Path) -> None:
    annotation_file = wide_image_dataset(tmp_path)
    plain = CocoDetectionDataset(tmp_path, annotation_file, 64, train=False)[0]
    flipped = CocoDetectionDataset(tmp_path, annotation_file, 64, train=True, hflip_prob=1.0)[0]
    # Content is 64 px wide, so x -> 64 - x.
    assert torch.allclose(flipped.boxes, torch.tensor([[48.0, 9.6, 60.8, 16.0]]))
    x0, y0, x1, y1 = (round(v) for v in flipped.boxes[0].tolist())
    inside = flipped.image[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
    assert torch.allclose(inside.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert flipped.image[0, 12, 8] < 0.6  # the original location is grey now
    assert torch.equal(flipped.image[:, :32], plain.image[:, :32].flip(-1))
    assert flipped.image[:, 32:].abs().sum() == 0


def test_flip_is_random_and_reproducible_from_torch_seed(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(tmp_path, wide_image_dataset(tmp_path), 64, train=True)
    torch.manual_seed(0)
    first = [dataset[0].boxes[0, 0].item() for _ in range(20)]
    torch.manual_seed(0)
    second = [dataset[0].boxes[0, 0].item() for _ in range(20)]
    assert first == second
    assert len(set(first)) == 2  # both flipped and unflipped occur


def test_missing_annotation_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "instances.json"
    with pytest.raises(DataError) as info:
        CocoDetectionDataset(tmp_path, missing, 64, train=False)
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    annotation_file = wide_image_dataset(tmp_path)
    (tmp_path / "wide.png").write_bytes(b"this is not a png" * 10)
    dataset = CocoDetectionDataset(tmp_path, annotation_file, 64, train=False)
    with pytest.raises(DataError, match="wide.png"):
        dataset[0]
    with pytest.raises(DataError, match="wide.png"):
        CocoDetectionDataset(tmp_path, annotation_file, 64, train=False, preload=True)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    annotation_file = wide_image_dataset(tmp_path)
    (tmp_path / "empty.png").unlink()
    dataset = CocoDetectionDataset(tmp_path, annotation_file, 64, train=False)
    with pytest.raises(DataError, match="empty.png"):
        dataset[1]


def test_embedded_dataset_preload_matches_lazy_and_loader_is_seeded(tmp_path: Path) -> None:
    root = generate_embedded_dataset(tmp_path, 6, 2, 64, seed=0)
    args = (root / "images" / "train", root / "annotations" / "train.json", 64)
    lazy = CocoDetectionDataset(*args, train=False)
    preloaded = CocoDetectionDataset(*args, train=False, preload=True)
    assert lazy.num_classes == 6 and len(lazy) == 6
    for i in range(len(lazy)):
        assert torch.equal(lazy[i].image, preloaded[i].image)
        assert torch.equal(lazy[i].boxes, preloaded[i].boxes)
    orders = [
        [batch.image_ids.tolist() for batch in build_dataloader(lazy, 4, True, seed=seed)]
        for seed in (1, 1, 2)
    ]
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert sorted(sum(orders[0], [])) == lazy.image_ids
