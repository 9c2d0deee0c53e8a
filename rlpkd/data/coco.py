"""A COCO-format detection dataset (real COCO or the embedded synthetic set) and its loader.

Images are letterboxed: the longer side is scaled to ``image_size`` (keeping the aspect ratio)
and the bottom/right is zero-padded to ``image_size``×``image_size``. ``scale`` (input pixels per
original pixel) maps predictions back to the original image (``evaluation.coco_eval``); it is
exact on both axes, whatever the aspect ratio: input pixel ``i`` covers original pixels
``[i / scale, (i + 1) / scale)``, so the content's last row or column may be part padding (it
is kept, not cut: the content spans ``ceil(width * scale)`` input pixels).

Which boxes are trained on and which are scored in evaluation follows one rule
(``rlpkd.data.annotations``): boxes are clipped to their image; crowd boxes and boxes narrower or
shorter than 1 pixel inside their image are not trained on and are ignore regions in evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from rlpkd.data.annotations import GroundTruthReport, read_coco_annotations, split_ground_truth
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
    content_w: int  # size of the letterboxed image content in whole input pixels
    content_h: int
    extent_w: float  # the original image's exact extent in input pixels (width * scale)
    extent_h: float


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

    The annotation file is checked in full at construction (``read_coco_annotations``). Boxes
    are clipped to their image; crowd boxes and boxes narrower or shorter than 1 original pixel
    inside their image are not training targets, and ``coco`` (the evaluation ground truth)
    holds them as ignore regions, so training and evaluation see the same boxes
    (``rlpkd.data.annotations``; counts and the first example in ``ground_truth_report``).
    Images with no boxes are kept.

    Raises:
        DataError: the annotation file is missing, not valid JSON or not a valid COCO detection
            file (one line naming the file and the entry), or an image is missing, cannot be
            decoded or has another size than its annotation says (at construction with
            ``preload``, else when it is loaded).
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
        ground_truth = split_ground_truth(read_coco_annotations(self.annotation_file))
        self._report = ground_truth.report
        self._coco = COCO()
        self._coco.dataset = ground_truth.evaluation_document
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco.createIndex()
        self._category_ids = sorted(self._coco.getCatIds())
        self._label_of_category = {cat: i for i, cat in enumerate(self._category_ids)}
        self._image_ids = sorted(self._coco.getImgIds())
        self._targets = [
            self._load_target(image_id, ground_truth.train_boxes.get(image_id, []))
            for image_id in self._image_ids
        ]
        self._preloaded: torch.Tensor | None = None
        if preload:
            self._preloaded = torch.stack(
                [self._letterboxed_uint8(i) for i in range(len(self._image_ids))]
            )

    @property
    def coco(self) -> COCO:
        """The evaluation ground truth as a pycocotools COCO object: the file's annotations with
        boxes clipped to their image and untrainable boxes marked as ignore regions
        (``iscrowd: 1``, reason under ``rlpkd_ignored``)."""
        return self._coco

    @property
    def ground_truth_report(self) -> GroundTruthReport:
        """How many of the file's boxes are crowd, untrainable or clipped, with an example."""
        return self._report

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
        # Boxes are clipped to the image already; this only absorbs float rounding.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, target.extent_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, target.extent_h)
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
        """(scale, content width, content height): the content is every input pixel the scaled
        image covers, even in part, so flipping those columns keeps every box inside them."""
        scale = self.image_size / max(width, height)
        # The tolerance keeps float noise (200 * 0.32 = 64.00000000000001) from adding a pixel.
        content_w = min(self.image_size, max(1, math.ceil(width * scale - 1e-6)))
        content_h = min(self.image_size, max(1, math.ceil(height * scale - 1e-6)))
        return scale, content_w, content_h

    def _load_target(
        self, image_id: int, train_boxes: list[tuple[float, float, float, float, int]]
    ) -> _Target:
        """Training boxes and labels of one image, and its letterbox geometry."""
        info = self._coco.imgs[image_id]
        width, height = info["width"], info["height"]
        scale, content_w, content_h = self._letterbox_geometry(width, height)
        boxes = [box[:4] for box in train_boxes]
        labels = [self._label_of_category[box[4]] for box in train_boxes]
        return _Target(
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long),
            scale=scale,
            content_w=content_w,
            content_h=content_h,
            extent_w=width * scale,
            extent_h=height * scale,
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
        if rgb.size != (info["width"], info["height"]):
            raise DataError(
                f"image file {path} is {rgb.size[0]}x{rgb.size[1]} but the annotations say "
                f"{info['width']}x{info['height']}"
            )
        scale, content_w, content_h = self._letterbox_geometry(*rgb.size)
        if (content_w, content_h) != rgb.size:
            rgb = _resize_exactly(rgb, scale, content_w, content_h)
        canvas = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        canvas[:, :content_h, :content_w] = torch.from_numpy(np.asarray(rgb).copy()).permute(
            2, 0, 1
        )
        return canvas


def _resize_exactly(image: Image.Image, scale: float, width: int, height: int) -> Image.Image:
    """``image`` scaled by exactly ``scale`` on both axes into a ``width``×``height`` canvas.

    Resizing the whole image to the whole-pixel content size would scale each axis by its own
    factor (a 240×12 image at 64 px covers 3.2 rows: resized into 4 rows it would be scaled 0.27
    across but 0.33 down), so boxes scaled by ``scale`` would drift off their objects; instead
    the source region that maps onto the canvas exactly is resampled, zero-padding the image
    where that region passes its edge.
    """
    box_w, box_h = width / scale, height / scale
    if box_w > image.width + 1e-6 or box_h > image.height + 1e-6:
        padded = Image.new("RGB", (math.ceil(box_w), math.ceil(box_h)))
        padded.paste(image, (0, 0))
        image = padded
    box = (0.0, 0.0, min(box_w, image.width), min(box_h, image.height))
    return image.resize((width, height), Image.BILINEAR, box=box)


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
