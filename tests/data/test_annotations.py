"""Annotation files: every bad entry is one DataError line naming the file and the entry;
boxes that cannot be trained on are reported once per split."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlpkd.config import DataConfig
from rlpkd.data.annotations import read_coco_annotations
from rlpkd.data.build import build_datasets
from rlpkd.data.coco import CocoDetectionDataset
from rlpkd.errors import DataError
from tests.data.coco_fixture import box_annotation


def valid_document() -> dict:
    return {
        "images": [
            {"id": 11, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 12, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            box_annotation(101, 11, 3, [1, 2, 10, 8]),
            box_annotation(102, 12, 7, [5, 5, 20, 20]),
            box_annotation(103, 12, 3, [2, 2, 6, 6]),
        ],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
    }


def write_split(root: Path, document: dict, name: str = "instances.json") -> Path:
    """The document and the two 40×30 images of ``valid_document`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for file_name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(root / file_name)
    path = root / name
    path.write_text(json.dumps(document))
    return path


def annotation(document: dict, annotation_id: int) -> dict:
    return next(a for a in document["annotations"] if a["id"] == annotation_id)


def set_bbox(bbox: list) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        annotation(document, 102)["bbox"] = bbox

    return mutate


def set_field(key: str, value) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        annotation(document, 102)[key] = value

    return mutate


def drop(key: str) -> Callable[[dict], None]:
    return lambda document: document.pop(key)


def duplicate(key: str, index: int) -> Callable[[dict], None]:
    return lambda document: document[key].append(dict(document[key][index]))


# (case, mutation, text the one-line message must contain besides the file name)
BAD_ANNOTATIONS = [
    ("NaN in bbox", set_bbox([math.nan, 1, 5, 5]), "annotation 102 has bbox [nan, 1, 5, 5] with a non-finite value"),
    ("inf in bbox", set_bbox([1, 1, math.inf, 5]), "annotation 102 has bbox [1, 1, inf, 5] with a non-finite value"),
    ("3 numbers", set_bbox([1, 2, 3]), "annotation 102 has bbox [1, 2, 3]; a bbox is 4 numbers"),
    ("5 numbers", set_bbox([1, 2, 3, 4, 5]), "annotation 102 has bbox [1, 2, 3, 4, 5]"),
    ("a string", set_bbox([1, "2", 3, 4]), "annotation 102 has bbox [1, '2', 3, 4]"),
    ("no bbox", lambda d: annotation(d, 102).pop("bbox"), "annotation 102 has bbox None"),
    ("negative width", set_bbox([1, 1, -5, 5]), "annotation 102 has bbox [1, 1, -5, 5] with a negative width or height"),
    ("negative height", set_bbox([1, 1, 5, -0.5]), "annotation 102 has bbox [1, 1, 5, -0.5] with a negative"),
    ("unknown image", set_field("image_id", 99), "annotation 102 refers to image_id 99, which is not in 'images'"),
    ("unknown category", set_field("category_id", 12), "annotation 102 has category_id 12, which is not in 'categories'"),
    ("iscrowd 2", set_field("iscrowd", 2), "annotation 102 has iscrowd 2"),
    ("NaN area", set_field("area", math.nan), "annotation 102 has area nan"),
    ("no categories", drop("categories"), "has no 'categories'; a COCO detection file needs"),
    ("no images", drop("images"), "has no 'images'; a COCO detection file needs"),
    ("no annotations", drop("annotations"), "has no 'annotations'; a COCO detection file needs"),
    ("empty categories", lambda d: d["categories"].clear(), "'categories' is empty"),
    ("duplicate image id", duplicate("images", 1), "image id 12 appears twice"),
    ("duplicate annotation id", duplicate("annotations", 1), "annotation id 102 appears twice"),
    ("duplicate category id", duplicate("categories", 1), "category id 7 appears twice"),
    ("category without name", lambda d: d["categories"][1].pop("name"), "category 7 has no 'name'"),
    ("annotation without id", lambda d: annotation(d, 102).pop("id"), "annotation entry 1 (0-based) has no integer 'id'"),
    ("image width 0", lambda d: d["images"][1].update(width=0), "image 12 has width 0"),
    ("image without file", lambda d: d["images"][1].pop("file_name"), "image 12 has no 'file_name'"),
]  # fmt: skip


@pytest.mark.parametrize(
    "mutate, expected", [case[1:] for case in BAD_ANNOTATIONS], ids=[c[0] for c in BAD_ANNOTATIONS]
)
def test_bad_annotation_is_one_line_naming_file_and_entry(tmp_path: Path, mutate, expected) -> None:
    document = valid_document()
    mutate(document)
    path = write_split(tmp_path, document)
    with pytest.raises(DataError) as info:
        CocoDetectionDataset(tmp_path, path, 32, train=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"annotation file {path}: ")
    assert expected in message


@pytest.mark.parametrize(
    "content, expected",
    [("{not json", "is not valid JSON"), ("[1, 2]", "expected a JSON object"),
     ("\udcff", "is not valid JSON")],
    ids=["syntax", "a list", "not utf-8"],
)  # fmt: skip
def test_unreadable_file_is_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=expected) as info:
        read_coco_annotations(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_valid_file_loads_and_missing_area_is_the_box_area(tmp_path: Path) -> None:
    document = valid_document()
    del annotation(document, 102)["area"]
    document["images"][0]["width"] = 40.0  # some tools write sizes as floats
    dataset = CocoDetectionDataset(tmp_path, write_split(tmp_path, document), 32, train=False)
    assert dataset.coco.anns[102]["area"] == 400
    assert dataset.coco.imgs[11]["width"] == 40 and isinstance(dataset.coco.imgs[11]["width"], int)
    assert len(dataset) == 2 and dataset[1].labels.tolist() == [1, 0]


def coco_data_config(tmp_path: Path, train: dict, val: dict) -> DataConfig:
    train_file = write_split(tmp_path / "train", train)
    val_file = write_split(tmp_path / "val", val, name="val.json")
    return DataConfig(
        source="coco",
        image_size=32,
        train_images=str(tmp_path / "train"),
        train_annotations=str(train_file),
        val_images=str(tmp_path / "val"),
        val_annotations=str(val_file),
        preload=False,
    )


def test_nan_box_in_training_annotations_stops_the_data_build(tmp_path: Path) -> None:
    """Before, the NaN box was kept as a training target (NaN < 1 is False) and the run
    trained on NaN losses."""
    train = valid_document()
    annotation(train, 101)["bbox"] = [math.nan, 1, 5, 5]
    config = coco_data_config(tmp_path, train, valid_document())
    with pytest.raises(DataError) as info:
        build_datasets(config, progress=False)
    assert str(info.value) == (
        f"annotation file {config.train_annotations}: annotation 101 has bbox [nan, 1, 5, 5] "
        "with a non-finite value"
    )


def test_build_prints_one_note_per_split_with_untrainable_boxes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    val = valid_document()
    val["annotations"] += [
        {"id": 17, "image_id": 12, "category_id": 3, "bbox": [5, 5, 0, 3], "iscrowd": 0},
        {"id": 18, "image_id": 11, "category_id": 3, "bbox": [9, 9, 0.5, 3], "iscrowd": 0},
        {"id": 19, "image_id": 11, "category_id": 7, "bbox": [0, 0, 20, 20], "iscrowd": 1},
    ]
    config = coco_data_config(tmp_path, valid_document(), val)
    datasets = build_datasets(config, progress=False)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"note: {config.val_annotations}: 2 of 6 boxes cannot be trained on (w or h < 1 px "
        "inside the image), e.g. annotation 17 (image 12) bbox [5, 5, 0, 3], ignored in "
        "training and evaluation; 1 of 6 boxes are crowd regions, not trained on and ignore "
        "regions in evaluation (COCO's rule)"
    ]
    report = datasets.val.ground_truth_report
    assert (report.untrainable_boxes, report.crowd_boxes, report.total_boxes) == (2, 1, 6)
    assert datasets.train.ground_truth_report.note("x") is None
    build_datasets(config, progress=False)  # once per process
    assert capsys.readouterr().err == ""
