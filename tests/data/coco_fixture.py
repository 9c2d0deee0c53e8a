"""A small annotation file shaped like real COCO, written with tiny images for tests.

80 categories with COCO's real ids (1..90 with gaps) and names, 6-digit image ids and large
annotation ids, float boxes, polygon and RLE segmentations, ``area`` from the segmentation (not
the box), ``iscrowd`` regions, JPEG and PNG images in modes RGB, L, P and RGBA, very wide and very
tall images, an image with dozens of boxes, an image without boxes, and boxes that cannot be
trained on (zero width, half a pixel wide, outside the image) or that pass the image's edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rlpkd.data.coco import CocoDetectionDataset

COCO_CATEGORY_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
)
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# Image ids, in the order written.
BUSY, WIDE, TALL, EMPTY, EDGES, ODD = 397133, 37777, 252219, 87038, 174482, 403385
# Annotation ids of the special boxes on EDGES.
CROWD_ID, ZERO_WIDTH_ID, HALF_PIXEL_ID, OUTSIDE_ID, PAST_EDGE_ID = (
    900100,
    900101,
    900102,
    900103,
    900104,
)
UNTRAINABLE_IDS = (ZERO_WIDTH_ID, HALF_PIXEL_ID, OUTSIDE_ID)


IMAGE_SIZE = 64
"""The side of the letterboxed images the tests load the fixture at."""


@dataclass
class CocoFixture:
    """Paths of the written fixture and the document written."""

    image_dir: Path
    annotation_file: Path
    document: dict

    def dataset(self, train: bool = False, **options: Any) -> CocoDetectionDataset:
        """The fixture as a dataset of ``IMAGE_SIZE`` images (``options``: e.g. preload)."""
        return CocoDetectionDataset(
            self.image_dir, self.annotation_file, IMAGE_SIZE, train=train, **options
        )


def box_annotation(
    annotation_id: int, image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0
) -> dict:
    """A COCO annotation of ``bbox`` (x, y, w, h) whose area is the box's, w × h."""
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": iscrowd,
    }


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y + h / 2, x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h]]


def write_coco_fixture(root: Path, seed: int = 0) -> CocoFixture:
    """Write images under ``root/images`` and ``root/instances.json``; return the paths."""
    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []

    def add_image(image_id: int, pixels: Image.Image, extension: str) -> None:
        file_name = f"{image_id:012d}.{extension}"
        pixels.save(image_dir / file_name)
        images.append(
            {"license": 3, "file_name": file_name, "coco_url": f"http://x/{file_name}",
             "height": pixels.height, "width": pixels.width,
             "date_captured": "2013-11-14 17:02:52", "id": image_id}
        )  # fmt: skip

    def add_box(
        image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0, ann_id: int = 0
    ) -> None:
        x, y, w, h = bbox
        if iscrowd:
            height = next(i["height"] for i in images if i["id"] == image_id)
            segmentation = {"counts": [int(height * x), int(h), 5], "size": [height, 1]}
        else:
            segmentation = _polygon(x, y, w, h)
        annotations.append(
            {"segmentation": segmentation, "area": round(0.7 * w * h, 3), "iscrowd": iscrowd,
             "image_id": image_id, "bbox": bbox, "category_id": category_id,
             "id": ann_id or 1_000_000 + len(annotations)}
        )  # fmt: skip

    # Dozens of boxes on a 64×48 RGB JPEG, over many categories including the first and last.
    add_image(BUSY, Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)), "jpg")
    for k in range(36):
        w, h = (round(float(v), 2) for v in rng.uniform(4, 22, 2))
        x, y = round(float(rng.uniform(0, 64 - w)), 2), round(float(rng.uniform(0, 48 - h)), 2)
        category = COCO_CATEGORY_IDS[(k * 7) % 80] if k > 1 else (1, 90)[k]
        add_box(BUSY, category, [x, y, w, h])
    # Very wide grayscale JPEG; one box spans the full height.
    wide = np.zeros((12, 240), dtype=np.uint8)
    wide[:, 100:140] = 250
    add_image(WIDE, Image.fromarray(wide, mode="L"), "jpg")
    add_box(WIDE, 18, [100.0, 0.0, 40.0, 12.0])
    add_box(WIDE, 3, [10.5, 2.25, 30.0, 8.0])
    add_box(WIDE, 3, [200.0, 4.0, 39.0, 7.5])
    # Very tall palette PNG (red and blue halves); a box spans the full width.
    tall = Image.new("P", (12, 240))
    tall.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    tall_pixels = np.zeros((240, 12), dtype=np.uint8)
    tall_pixels[:120] = 1
    tall_pixels[120:] = 2
    tall.putdata(tall_pixels.flatten().tolist())
    add_image(TALL, tall, "png")
    add_box(TALL, 44, [0.0, 10.0, 12.0, 100.0])
    add_box(TALL, 44, [2.0, 130.0, 9.0, 50.0])
    add_box(TALL, 62, [3.5, 200.0, 5.0, 39.0])
    # RGBA PNG without boxes.
    rgba = np.zeros((70, 50, 4), dtype=np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    add_image(EMPTY, Image.fromarray(rgba, mode="RGBA"), "png")
    # Crowd, untrainable and past-the-edge boxes among ordinary ones.
    add_image(EDGES, Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)), "png")
    add_box(EDGES, 1, [10.0, 10.0, 30.0, 30.0])
    add_box(EDGES, 1, [40.0, 5.0, 35.0, 50.0], iscrowd=1, ann_id=CROWD_ID)
    add_box(EDGES, 1, [5.0, 5.0, 0.0, 3.0], ann_id=ZERO_WIDTH_ID)
    add_box(EDGES, 2, [60.0, 20.0, 0.5, 10.0], ann_id=HALF_PIXEL_ID)
    add_box(EDGES, 2, [85.0, 20.0, 10.0, 10.0], ann_id=OUTSIDE_ID)
    add_box(EDGES, 2, [-6.0, 40.0, 20.0, 30.0], ann_id=PAST_EDGE_ID)
    add_box(EDGES, 90, [50.0, 30.0, 20.0, 12.0])
    # Odd-sized grayscale PNG (scaled sizes round on both axes).
    add_image(ODD, Image.fromarray(rng.integers(0, 255, (47, 33), dtype=np.uint8), mode="L"), "png")
    add_box(ODD, 27, [1.13, 2.71, 30.4, 40.9])
    add_box(ODD, 27, [15.0, 20.0, 17.99, 26.99])

    document = {
        "info": {"description": "COCO-shaped test fixture", "year": 2017},
        "licenses": [{"url": "http://x", "id": 3, "name": "x"}],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"supercategory": "thing", "id": i, "name": name}
            for i, name in zip(COCO_CATEGORY_IDS, COCO_NAMES, strict=True)
        ],
    }
    annotation_file = root / "instances.json"
    annotation_file.write_text(json.dumps(document))
    return CocoFixture(image_dir, annotation_file, document)
