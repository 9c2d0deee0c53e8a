"""A COCO-format detection dataset (real COCO or the embedded synthetic set) and its loader.

Images are letterboxed: the longer side is scaled to ``image_size`` (keeping the aspect ratio)
and the bottom/right is zero-padded to ``image_size``×``image_size``. ``scale`` (input pixels per
original pixel) maps predictions back to the original image (``evaluation.coco_eval``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from rlpkd.data.batch import DetectionBatch
from rlpkd.errors import DataError

__all__ = ["DetectionSample", "CocoDetectionDataset", "collate_detection", "build_dataloader"]


@dataclass
class DetectionSample:
    """One letterboxed image with its boxes.

    Attributes:
        image: [3, S, S] float in [0, 1].
        boxes: [N, 4] float xyxy in input pixels (N may be 0).
        labels: [N] long contiguous class index.
        image_id: COCO image id.
        scale: input pixels per original-image pixel.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    image_id: int
    scale: float


class _Target(NamedTuple):
    boxes: torch.Tensor  # [N, 4] xyxy in original pixels
    labels: torch.Tensor  # [N] contiguous class index
    scale: float  # input pixels per original pixel
    content_w: int  # size of the letterboxed image content in input pixels
    content_h: int


class CocoDetectionDataset(Dataset):
    """A torch Dataset over a COCO-format annotation file and its image folder.

    Args:
        image_root: folder holding the images named by ``file_name`` in the annotations.
        annotation_file: COCO-format JSON.
        image_size: side S of the square letterboxed input.
        train: apply random horizontal flips (with ``hflip_prob``, from torch's global RNG).
        hflip_prob: flip probability when ``train``.
        preload: decode and letterbox every image once at construction into a uint8 tensor
            (fast epochs on small datasets; costs N·3·S² bytes).

    Crowd boxes and boxes narrower or shorter than 1 original pixel are skipped; images with no
    boxes are kept.

    Raises:
        DataError: the annotation file is missing or not valid COCO JSON, or an image is missing
            or cannot be decoded (at construction with ``preload``, else when it is loaded).
    """

    def __init__(
        self,
        image_root: Path,
        annotation_file: Path,
        image_size: int,
        train: bool,
        hflip_prob: float = 0.5,
        preload: bool = False,
    ) -> None:
        self.image_root = Path(image_root)
        self.annotation_file = Path(annotation_file)
        self.image_size = image_size
        self.train = train
        self.hflip_prob = hflip_prob
        if not self.annotation_file.is_file():
            raise DataError(
                f"annotation file {self.annotation_file} not found; check the dataset path in the "
                "config or generate the data with scripts/make_dataset.py"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(str(self.annotation_file))
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as error:
            raise DataError(
                f"annotation file {self.annotation_file} is not valid COCO JSON ({error})"
            ) from None
        self._category_ids = sorted(self._coco.getCatIds())
        self._label_of_category = {cat: i for i, cat in enumerate(self._category_ids)}
        self._image_ids = sorted(self._coco.getImgIds())
        self._targets = [self._load_target(image_id) for image_id in self._image_ids]
        self._preloaded: torch.Tensor | None = None
        if preload:
            self._preloaded = torch.stack(
                [self._letterboxed_uint8(i) for i in range(len(self._image_ids))]
            )

    @property
    def coco(self) -> COCO:
        """The pycocotools COCO object holding the ground truth."""
        return self._coco

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in dataset order."""
        return list(self._image_ids)

    @property
    def category_ids(self) -> list[int]:
        """COCO category id of each contiguous class index."""
        return list(self._category_ids)

    @property
    def class_names(self) -> list[str]:
        """Category name of each contiguous class index."""
        return [self._coco.cats[cat]["name"] for cat in self._category_ids]

    @property
    def num_classes(self) -> int:
        """Number of object classes K (labels lie in [0, K))."""
        return len(self._category_ids)

    def subset(self, indices: list[int], train: bool) -> CocoDetectionDataset:
        """A view holding only the images at ``indices`` (same COCO ground truth and classes);
        ``train`` switches the random flips. ``image_ids`` restricts evaluation to the view."""
        view = copy.copy(self)
        view.train = train
        view._image_ids = [self._image_ids[i] for i in indices]
        view._targets = [self._targets[i] for i in indices]
        if self._preloaded is not None:
            view._preloaded = self._preloaded[torch.as_tensor(indices, dtype=torch.long)]
        return view

    def __len__(self) -> int:
        return len(self._image_ids)

    def __getitem__(self, index: int) -> DetectionSample:
        target = self._targets[index]
        if self._preloaded is not None:
            canvas = self._preloaded[index]
        else:
            canvas = self._letterboxed_uint8(index)
        image = canvas.float().div_(255.0)
        content_w = target.content_w
        boxes = target.boxes * target.scale
        # Rounding the content size can leave a box a fraction of a pixel outside it.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, content_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, target.content_h)
        if self.train and torch.rand(()) < self.hflip_prob:
            # Flip only the image content, so the padding stays bottom/right.
            image[:, :, :content_w] = image[:, :, :content_w].flip(-1)
            boxes = torch.stack(
                [content_w - boxes[:, 2], boxes[:, 1], content_w - boxes[:, 0], boxes[:, 3]], dim=1
            )
        return DetectionSample(
            image=image,
            boxes=boxes,
            labels=target.labels.clone(),
            image_id=self._image_ids[index],
            scale=target.scale,
        )

    def _letterbox_geometry(self, width: int, height: int) -> tuple[float, int, int]:
        scale = self.image_size / max(width, height)
        content_w = min(self.image_size, max(1, round(width * scale)))
        content_h = min(self.image_size, max(1, round(height * scale)))
        return scale, content_w, content_h

    def _load_target(self, image_id: int) -> _Target:
        """Usable boxes and labels of one image, and its letterbox geometry."""
        info = self._coco.imgs[image_id]
        scale, content_w, content_h = self._letterbox_geometry(info["width"], info["height"])
        boxes, labels = [], []
        for annotation in self._coco.imgToAnns.get(image_id, []):
            x, y, w, h = annotation["bbox"]
            if annotation.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, info["width"]), min(y + h, info["height"])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            boxes.append([x0, y0, x1, y1])
            labels.append(self._label_of_category[annotation["category_id"]])
        return _Target(
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long),
            scale=scale,
            content_w=content_w,
            content_h=content_h,
        )

    def _letterboxed_uint8(self, index: int) -> torch.Tensor:
        """The [3, S, S] uint8 letterboxed image."""
        info = self._coco.imgs[self._image_ids[index]]
        path = self.image_root / info["file_name"]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except FileNotFoundError:
            raise DataError(
                f"image file {path} not found (listed in {self.annotation_file})"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise DataError(f"image file {path} cannot be decoded ({error})") from None
        _, content_w, content_h = self._letterbox_geometry(*rgb.size)
        if rgb.size != (info["width"], info["height"]):
            raise DataError(
                f"image file {path} is {rgb.size[0]}x{rgb.size[1]} but the annotations say "
                f"{info['width']}x{info['height']}"
            )
        if (content_w, content_h) != rgb.size:
            rgb = rgb.resize((content_w, content_h), Image.BILINEAR)
        canvas = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        canvas[:, :content_h, :content_w] = torch.from_numpy(np.asarray(rgb).copy()).permute(
            2, 0, 1
        )
        return canvas


def collate_detection(items: list[DetectionSample]) -> DetectionBatch:
    """Stack samples into a DetectionBatch, padding boxes to the largest count (at least 1 row)."""
    max_boxes = max(1, max(item.boxes.shape[0] for item in items))
    boxes = torch.zeros(len(items), max_boxes, 4)
    labels = torch.full((len(items), max_boxes), -1, dtype=torch.long)
    for i, item in enumerate(items):
        count = item.boxes.shape[0]
        boxes[i, :count] = item.boxes
        labels[i, :count] = item.labels
    return DetectionBatch(
        images=torch.stack([item.image for item in items]),
        boxes=boxes,
        labels=labels,
        image_ids=torch.tensor([item.image_id for item in items], dtype=torch.long),
        scales=torch.tensor([item.scale for item in items], dtype=torch.float32),
    )


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader yielding DetectionBatch, whose shuffling order is fixed by ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_detection,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
