"""COCO annotation files: read and check them, and decide which boxes are trained on and scored.

``read_coco_annotations`` validates the raw JSON itself, because pycocotools does not: it raises a
bare ``KeyError`` for a file without ``images`` or ``categories`` (or an annotation without
``area``, at evaluation time) and silently accepts an annotation whose ``image_id`` or
``category_id`` is unknown, duplicate ids (a duplicated annotation halves AP), and NaN boxes
(which train on NaN losses). Every such problem here is one ``DataError`` line naming the file
and the entry.

``split_ground_truth`` applies one rule to every box, so training and evaluation see the same
ground truth:

- a box is clipped to its image (in training and in evaluation alike);
- a box whose clipped width or height is below 1 original pixel (zero area, or outside the image)
  cannot be trained on: it is not a training target, and in evaluation it is an *ignore region*;
- a crowd box (``iscrowd: 1``) is not a training target and is an ignore region in evaluation
  (COCO's own rule).

Why ignore regions rather than deleting such boxes from the evaluation ground truth: a deleted box
turns a detection of the (real, if tiny) object the annotator marked into a false positive, so the
score would punish a detector for seeing it; an ignore region is COCO's own device for objects
that are not scored: a detection matched to it is neither a true nor a false positive, and not
detecting it is not a miss. So the model is neither taught nor scored on these boxes. pycocotools
reads the ignore flag only from ``iscrowd`` (``COCOeval._prepare`` overwrites ``ignore``), so an
untrainable box is marked ``iscrowd: 1`` in the evaluation ground truth, with the reason under
``rlpkd_ignored``. Like every crowd region it matches a detection whose area lies inside it
(intersection over the detection's area), so a detection inside the box is ignored; a zero-area
detection overlaps nothing (pycocotools' IoU is 0) and stays a false positive, as in COCO.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpkd.errors import DataError

__all__ = [
    "UNTRAINABLE_RULE",
    "BoxExample",
    "GroundTruthReport",
    "GroundTruth",
    "read_coco_annotations",
    "clip_box_to_image",
    "split_ground_truth",
]

UNTRAINABLE_RULE = "w or h < 1 px inside the image"

_REQUIRED_LISTS = ("images", "annotations", "categories")


@dataclass(frozen=True)
class BoxExample:
    """One annotation, as given in the file (for messages)."""

    annotation_id: int
    image_id: int
    bbox: tuple[float, ...]

    def describe(self) -> str:
        """E.g. ``annotation 17 (image 3) bbox [5, 5, 0, 3]``."""
        return f"annotation {self.annotation_id} (image {self.image_id}) bbox {_format_bbox(self.bbox)}"


@dataclass(frozen=True)
class GroundTruthReport:
    """What the rule in this module did to one annotation file's boxes.

    Attributes:
        total_boxes: annotations in the file.
        crowd_boxes: ``iscrowd`` boxes (ignore regions in evaluation, not trained on).
        untrainable_boxes: non-crowd boxes narrower or shorter than 1 px inside their image
            (ignore regions in evaluation, not trained on).
        clipped_boxes: trainable boxes that extend past their image, clipped to it.
        first_untrainable: the first untrainable box in file order, or None.
    """

    total_boxes: int
    crowd_boxes: int
    untrainable_boxes: int
    clipped_boxes: int
    first_untrainable: BoxExample | None

    @property
    def trained_boxes(self) -> int:
        """Boxes that are training targets (and scored ground truth in evaluation)."""
        return self.total_boxes - self.crowd_boxes - self.untrainable_boxes

    def note(self, source: str) -> str | None:
        """One ``note: …`` line for a user, or None when every box is trained on as given."""
        parts = []
        if self.untrainable_boxes:
            example = self.first_untrainable.describe() if self.first_untrainable else ""
            parts.append(
                f"{self.untrainable_boxes} of {self.total_boxes} boxes cannot be trained on "
                f"({UNTRAINABLE_RULE}), e.g. {example}, ignored in training and evaluation"
            )
        if self.crowd_boxes:
            parts.append(
                f"{self.crowd_boxes} of {self.total_boxes} boxes are crowd regions, not trained "
                "on and ignore regions in evaluation (COCO's rule)"
            )
        if self.clipped_boxes:
            parts.append(
                f"{self.clipped_boxes} of {self.total_boxes} boxes extend past their image and "
                "are clipped to it in training and evaluation"
            )
        if not parts:
            return None
        return f"note: {source}: " + "; ".join(parts)


@dataclass
class GroundTruth:
    """One annotation file split into training targets and the evaluation ground truth.

    Attributes:
        evaluation_document: the COCO document COCOeval scores against: the file's images and
            categories, and its annotations with boxes clipped to their image and untrainable
            boxes marked ``iscrowd: 1`` (ignore regions).
        train_boxes: per image id, the training targets as ``(x0, y0, x1, y1, category_id)`` in
            original pixels, in file order (images without targets are absent).
        report: counts and the first untrainable box.
    """

    evaluation_document: dict[str, Any]
    train_boxes: dict[int, list[tuple[float, float, float, float, int]]]
    report: GroundTruthReport


def _format_bbox(bbox: Sequence[Any]) -> str:
    def one(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else repr(value)

    return "[" + ", ".join(one(v) for v in bbox) + "]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_coco_annotations(path: Path) -> dict[str, Any]:
    """Read a COCO detection file and check everything the platform relies on.

    Checked: valid JSON holding an object with ``images``, ``annotations`` and ``categories``
    lists; at least one image and one category; unique integer ids for images, annotations and
    categories; every category has a ``name``; every image a ``file_name`` and positive integer
    ``width``/``height`` (``640.0`` is read as 640); every annotation's ``image_id`` and
    ``category_id`` exist; its ``bbox`` is 4 finite numbers with non-negative width and height;
    ``iscrowd``, if given, is 0 or 1; ``area``, if given, is a finite number >= 0. A missing
    ``area`` is set to the box area w·h (COCOeval needs it for the size bins). Negative x or y
    and boxes past the image are allowed (see ``split_ground_truth``).

    Returns:
        The parsed document, with image sizes as ints and every annotation's ``area`` set.

    Raises:
        DataError: one line naming the file and the offending entry (by id where it has one).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"annotation file {path} not found; check the dataset path in the config or "
            "generate the data with scripts/make_dataset.py"
        )
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"annotation file {path} is not valid JSON ({error})") from None
    except OSError as error:
        raise DataError(f"annotation file {path} cannot be read ({error.strerror})") from None

    def fail(what: str) -> DataError:
        return DataError(f"annotation file {path}: {what}")

    if not isinstance(document, dict):
        raise fail("expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in _REQUIRED_LISTS:
        if not isinstance(document.get(key), list):
            problem = (
                f"has no '{key}'"
                if key not in document
                else f"has '{key}' as a {type(document[key]).__name__}, not a list"
            )
            raise fail(
                f"{problem}; a COCO detection file needs 'images', 'annotations' and "
                "'categories' lists"
            )
    category_ids = _check_categories(document["categories"], fail)
    image_ids = _check_images(document["images"], fail)
    _check_annotations(document["annotations"], image_ids, category_ids, fail)
    return document


def _entry_id(entry: Any, kind: str, position: int, fail) -> int:
    if not isinstance(entry, dict):
        raise fail(f"{kind} entry {position} (0-based) is not a JSON object")
    if not _is_integer(entry.get("id")):
        raise fail(
            f"{kind} entry {position} (0-based) has no integer 'id' (got {entry.get('id')!r})"
        )
    return entry["id"]


def _unique_entries(entries: list, kind: str, section: str, fail) -> Iterator[tuple[int, dict]]:
    """(id, entry) of every entry of ``section``, each checked to be a JSON object whose integer
    id no earlier entry has."""
    ids: set[int] = set()
    for position, entry in enumerate(entries):
        entry_id = _entry_id(entry, kind, position, fail)
        if entry_id in ids:
            raise fail(f"{kind} id {entry_id} appears twice in '{section}'")
        ids.add(entry_id)
        yield entry_id, entry


def _check_categories(categories: list, fail) -> set[int]:
    if not categories:
        raise fail("'categories' is empty; list the object classes as {'id': ..., 'name': ...}")
    for category_id, category in _unique_entries(categories, "category", "categories", fail):
        if not isinstance(category.get("name"), str):
            raise fail(f"category {category_id} has no 'name' string")
    return {category["id"] for category in categories}


def _check_images(images: list, fail) -> set[int]:
    if not images:
        raise fail("'images' is empty; a split needs at least one image")
    for image_id, image in _unique_entries(images, "image", "images", fail):
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise fail(f"image {image_id} has no 'file_name'")
        for key in ("width", "height"):
            value = image.get(key)
            if not (
                _is_number(value) and math.isfinite(value) and value == int(value) and value >= 1
            ):
                raise fail(f"image {image_id} has {key} {value!r}; it must be a positive integer")
            image[key] = int(value)
    return {image["id"] for image in images}


def _check_annotations(
    annotations: list, image_ids: set[int], category_ids: set[int], fail
) -> None:
    for annotation_id, annotation in _unique_entries(
        annotations, "annotation", "annotations", fail
    ):
        where = f"annotation {annotation_id}"
        image_id = annotation.get("image_id")
        if not _is_integer(image_id) or image_id not in image_ids:
            raise fail(f"{where} refers to image_id {image_id!r}, which is not in 'images'")
        category_id = annotation.get("category_id")
        if not _is_integer(category_id) or category_id not in category_ids:
            raise fail(
                f"{where} has category_id {category_id!r}, which is not in 'categories' "
                f"({len(category_ids)} ids from {min(category_ids)} to {max(category_ids)})"
            )
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise fail(f"{where} has bbox {bbox!r}; a bbox is 4 numbers [x, y, width, height]")
        if not all(math.isfinite(v) for v in bbox):
            raise fail(f"{where} has bbox {_format_bbox(bbox)} with a non-finite value")
        if bbox[2] < 0 or bbox[3] < 0:
            raise fail(f"{where} has bbox {_format_bbox(bbox)} with a negative width or height")
        iscrowd = annotation.get("iscrowd", 0)
        if not (_is_number(iscrowd) and iscrowd in (0, 1)):
            raise fail(f"{where} has iscrowd {iscrowd!r}; it must be 0 or 1")
        if "area" in annotation:
            area = annotation["area"]
            if not (_is_number(area) and math.isfinite(area) and area >= 0):
                raise fail(f"{where} has area {area!r}; it must be a finite number >= 0")
        else:
            annotation["area"] = bbox[2] * bbox[3]


def clip_box_to_image(
    bbox: Sequence[float], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """A COCO ``[x, y, w, h]`` box clipped to the image, as xyxy; None if it cannot be trained on.

    None when the clipped width or height is below 1 pixel (``UNTRAINABLE_RULE``).
    """
    x, y, w, h = bbox
    x0, y0 = max(float(x), 0.0), max(float(y), 0.0)
    x1, y1 = min(float(x + w), float(width)), min(float(y + h), float(height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def split_ground_truth(document: dict[str, Any]) -> GroundTruth:
    """Apply the module's rule to a checked document (``read_coco_annotations``).

    The input document is not modified; the evaluation document shares its images and
    categories and every annotation the rule leaves as it is.
    """
    images = {image["id"]: image for image in document["images"]}
    train_boxes: dict[int, list[tuple[float, float, float, float, int]]] = {}
    evaluation_annotations = []
    crowd = untrainable = clipped = 0
    first_untrainable: BoxExample | None = None
    for annotation in document["annotations"]:
        if annotation.get("iscrowd", 0):
            crowd += 1
            evaluation_annotations.append(annotation)
            continue
        image = images[annotation["image_id"]]
        xyxy = clip_box_to_image(annotation["bbox"], image["width"], image["height"])
        if xyxy is None:
            untrainable += 1
            if first_untrainable is None:
                first_untrainable = BoxExample(
                    annotation["id"], annotation["image_id"], tuple(annotation["bbox"])
                )
            evaluation_annotations.append(
                {**annotation, "iscrowd": 1, "rlpkd_ignored": UNTRAINABLE_RULE}
            )
            continue
        x0, y0, x1, y1 = xyxy
        x, y, w, h = annotation["bbox"]
        if x < 0 or y < 0 or x + w > image["width"] or y + h > image["height"]:
            clipped += 1
            annotation = {**annotation, "bbox": [x0, y0, x1 - x0, y1 - y0]}
        evaluation_annotations.append(annotation)
        train_boxes.setdefault(annotation["image_id"], []).append(
            (x0, y0, x1, y1, annotation["category_id"])
        )
    report = GroundTruthReport(
        total_boxes=len(document["annotations"]),
        crowd_boxes=crowd,
        untrainable_boxes=untrainable,
        clipped_boxes=clipped,
        first_untrainable=first_untrainable,
    )
    evaluation_document = {**document, "annotations": evaluation_annotations}
    return GroundTruth(evaluation_document, train_boxes, report)
