"""Evaluation scores against the ground truth the model is trained on (COCO's ignore rule)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlpkd.data.coco import CocoDetectionDataset, collate_detection
from rlpkd.evaluation.coco_eval import detections_to_coco, evaluate_coco
from tests.data.coco_fixture import BUSY, EDGES, HALF_PIXEL_ID, box_annotation

# COCOeval's precision is tp / (tp + fp + eps): a class with one box scores 1 - 2e-16.
EXACT = 1e-9


def targets_as_predictions(dataset: CocoDetectionDataset) -> list[dict]:
    """The dataset's training targets, through the prediction path (letterbox and back)."""
    batch = collate_detection([dataset[i] for i in range(len(dataset))])
    valid = batch.valid
    return detections_to_coco(
        batch.image_ids,
        [batch.boxes[i][valid[i]] for i in range(len(dataset))],
        [torch.ones(int(valid[i].sum())) for i in range(len(dataset))],
        [batch.labels[i][valid[i]] for i in range(len(dataset))],
        batch.scales,
        dataset.category_ids,
    )


def assert_perfect(metrics: dict[str, float]) -> None:
    scored = {name: value for name, value in metrics.items() if not np.isnan(value)}
    assert scored and all(abs(value - 1.0) < EXACT for value in scored.values()), metrics


def test_training_targets_as_predictions_score_ap_one(coco_dataset) -> None:
    """Crowd, zero-width, half-pixel and outside boxes present; past-the-edge box clipped."""
    results = targets_as_predictions(coco_dataset)
    assert {r["category_id"] for r in results} >= {1, 90}  # original ids, not labels
    assert_perfect(evaluate_coco(coco_dataset.coco, results, coco_dataset.image_ids))


def test_predictions_carry_the_original_category_ids(coco_dataset, coco_fixture) -> None:
    results = [r for r in targets_as_predictions(coco_dataset) if r["image_id"] == BUSY]
    expected = [a for a in coco_fixture.document["annotations"] if a["image_id"] == BUSY]
    assert [r["category_id"] for r in results] == [a["category_id"] for a in expected]
    for result, annotation in zip(results, expected, strict=True):
        assert result["bbox"] == pytest.approx(annotation["bbox"], abs=1e-3)


def test_detections_on_ignore_regions_are_not_false_positives(coco_dataset) -> None:
    """Every evaluation box of positive area as a prediction, the ignore regions included."""
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 1.0}
        for a in coco_dataset.coco.dataset["annotations"]
        if a["bbox"][2] * a["bbox"][3] > 0
    ]  # fmt: skip
    assert any(r["bbox"] == [60.0, 20.0, 0.5, 10.0] for r in results)  # the half-pixel box
    assert_perfect(evaluate_coco(coco_dataset.coco, results, coco_dataset.image_ids))
    assert coco_dataset.coco.anns[HALF_PIXEL_ID]["iscrowd"] == 1


@pytest.mark.parametrize("mistake", ["wrong class", "shifted box", "extra detection"])
def test_a_wrong_prediction_lowers_ap(coco_dataset, mistake: str) -> None:
    results = targets_as_predictions(coco_dataset)
    first = next(i for i, r in enumerate(results) if r["image_id"] == EDGES)
    if mistake == "wrong class":
        results[first]["category_id"] = 5
    elif mistake == "shifted box":
        x, y, w, h = results[first]["bbox"]
        results[first]["bbox"] = [x + w / 2, y, w, h]
    else:  # a confident detection on background, outside every box of the image
        results.append({"image_id": EDGES, "category_id": 1, "bbox": [2.0, 45.0, 10.0, 10.0],
                        "score": 2.0})  # fmt: skip
    assert evaluate_coco(coco_dataset.coco, results, coco_dataset.image_ids)["AP"] < 1 - 1e-3


def write_single_image(root: Path, annotations: list[dict]) -> CocoDetectionDataset:
    Image.fromarray(np.zeros((100, 100, 3), dtype=np.uint8)).save(root / "a.png")
    document = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "annotations": [
            box_annotation(i + 1, 1, 1, a["bbox"], a["iscrowd"]) for i, a in enumerate(annotations)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (root / "gt.json").write_text(json.dumps(document))
    return CocoDetectionDataset(root, root / "gt.json", 100, train=False)


def test_a_detection_on_a_crowd_region_is_not_a_false_positive(tmp_path: Path) -> None:
    dataset = write_single_image(
        tmp_path,
        [{"bbox": [5, 5, 20, 20], "iscrowd": 0}, {"bbox": [40, 40, 50, 50], "iscrowd": 1}],
    )
    hit = {"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.5}
    in_crowd = {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.9}
    on_background = {"image_id": 1, "category_id": 1, "bbox": [5, 60, 20, 20], "score": 0.9}
    # The crowd detection ranks first; as a false positive it would halve the precision.
    assert_perfect(evaluate_coco(dataset.coco, [hit, in_crowd]))
    assert evaluate_coco(dataset.coco, [hit, on_background])["AP"] < 0.6


def test_degenerate_val_boxes_are_ignored_not_missed(tmp_path: Path) -> None:
    """The issue's case: perfect predictions of the trained boxes scored 0.98 before."""
    boxes = [[5, 5, 20, 20], [30, 30, 25, 25], [60, 10, 30, 30], [10, 60, 22, 30]]
    degenerate = [[5, 5, 0, 3], [70, 70, 0.4, 12], [80, 80, 7, 0]]
    dataset = write_single_image(tmp_path, [{"bbox": b, "iscrowd": 0} for b in boxes + degenerate])
    results = targets_as_predictions(dataset)
    assert len(results) == len(boxes)
    assert_perfect(evaluate_coco(dataset.coco, results, dataset.image_ids))
    assert dataset.ground_truth_report.untrainable_boxes == 3


def test_detections_to_coco_rejects_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match="outside"):
        detections_to_coco(
            torch.tensor([1]), [torch.zeros(1, 4)], [torch.ones(1)], [torch.tensor([-1])],
            torch.ones(1), [3, 7],
        )  # fmt: skip
