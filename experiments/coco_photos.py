"""A few photo-sized images in real COCO's instances format, for checking the full-size path.

No COCO files can be downloaded here, so ``write_coco_photos`` renders its own: JPEGs of photo
sizes (landscape, portrait, larger than 800 px, an odd 4:3 crop) with a shaded background, sensor
noise and filled shapes as objects from small (about 16 px) to large (half the image), annotated as
COCO does it: 80 categories with COCO's ids (1-90 with gaps), ``[x, y, w, h]`` float boxes, polygon
segmentations, ``area``, ``iscrowd``, 12-digit file names. The pixels are synthetic; the sizes, the
format and the loader's work on them (letterboxing to ``data.image_size``) are those of COCO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COCO_CATEGORY_IDS", "PHOTO_SIZES", "CocoPhotos", "write_coco_photos"]

COCO_CATEGORY_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
)
"""The 80 category ids of COCO 2017's instances files."""

PHOTO_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (480, 640), (1024, 768), (800, 533))
"""(width, height) of the photos, in turn: COCO's common shapes and one above 800 px."""


@dataclass(frozen=True)
class CocoPhotos:
    """The four data paths of the written photos (``data.train_images`` ... ``val_annotations``)."""

    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path

    def overrides(self) -> list[str]:
        """``--set`` lines that point a config's ``data`` section at these photos."""
        return [
            "data.source=coco",
            f"data.train_images={self.train_images}",
            f"data.train_annotations={self.train_annotations}",
            f"data.val_images={self.val_images}",
            f"data.val_annotations={self.val_annotations}",
        ]


def _photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A shaded background with sensor noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.08, 0.08, (2, 3))
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _draw_objects(
    image: Image.Image, image_id: int, rng: np.random.Generator, first_annotation_id: int
) -> list[dict]:
    """Filled rectangles and ellipses from about 16 px to half the image; their annotations."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    annotations = []
    for k in range(int(rng.integers(4, 9))):
        side = float(np.exp(rng.uniform(np.log(16), np.log(min(width, height) / 2))))
        w = round(side * float(rng.uniform(0.6, 1.4)), 2)
        h = round(side * float(rng.uniform(0.6, 1.4)), 2)
        w, h = min(w, width - 2.0), min(h, height - 2.0)
        x = round(float(rng.uniform(0, width - w)), 2)
        y = round(float(rng.uniform(0, height - h)), 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.rectangle if k % 2 == 0 else draw.ellipse
        shape([x, y, x + w, y + h], fill=colour)
        annotations.append(
            {"segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
             "area": round(w * h, 3), "iscrowd": 0, "image_id": image_id, "bbox": [x, y, w, h],
             "category_id": int(rng.choice(COCO_CATEGORY_IDS)), "id": first_annotation_id + k}
        )  # fmt: skip
    return annotations


def _write_split(root: Path, split: str, count: int, first_id: int, rng: np.random.Generator):
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image_id = first_id + i
        width, height = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        photo = _photo(width, height, rng)
        annotations += _draw_objects(photo, image_id, rng, 1_000_000 + 100 * image_id)
        file_name = f"{image_id:012d}.jpg"
        photo.save(image_dir / file_name, quality=90)
        images.append({"file_name": file_name, "height": height, "width": width, "id": image_id})
    document = {
        "info": {"description": "synthetic photos in COCO 2017 instances format"},
        "images": images,
        "annotations": annotations,
        "categories": [{"supercategory": "thing", "id": i, "name": f"class{i}"}
                       for i in COCO_CATEGORY_IDS],
    }  # fmt: skip
    annotation_file = root / "annotations" / f"instances_{split}2017.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps(document))
    return image_dir, annotation_file


def write_coco_photos(root: str | Path, num_train: int, num_val: int, seed: int = 0) -> CocoPhotos:
    """Write ``num_train`` + ``num_val`` photos under ``root`` in COCO's layout
    (``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_images, train_annotations = _write_split(root, "train", num_train, 1, rng)
    val_images, val_annotations = _write_split(root, "val", num_val, 1 + num_train, rng)
    return CocoPhotos(train_images, train_annotations, val_images, val_annotations)
