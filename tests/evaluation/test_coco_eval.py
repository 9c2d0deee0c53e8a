"""COCO evaluation: perfect and empty submissions, NaN bins, and the letterbox round trip."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from rlpkd.data.coco import CocoDetectionDataset, collate_detection
from rlpkd.evaluation.coco_eval import METRIC_NAMES, detections_to_coco, evaluate_coco

# One small (20×20), one medium (50×40) and one large (120×100) box over two images.
GT_BOXES = {1: [(1, [10, 10, 20, 20]), (2, [60, 60, 50, 40])], 2: [(1, [5, 5, 120, 100])]}


def make_coco(boxes: dict[int, list[tuple[int, list[float]]]]) -> COCO:
    annotations = []
    for image_id, objects in boxes.items():
        for category_id, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in boxes],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_as_results(coco: COCO) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in coco.anns.values()
    ]


def test_ground_truth_as_predictions_scores_one() -> None:
    coco = make_coco(GT_BOXES)
    results = gt_as_results(coco)
    before = copy.deepcopy(results)
    metrics = evaluate_coco(coco, results)
    assert list(metrics) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(1.0), name
    assert results == before  # the caller's list is not modified by loadRes


def test_wrong_predictions_score_below_one() -> None:
    coco = make_coco(GT_BOXES)
    results = gt_as_results(coco)
    results[0]["bbox"] = [x + 8 for x in results[0]["bbox"][:2]] + results[0]["bbox"][2:]
    results[1]["category_id"] = 1
    metrics = evaluate_coco(coco, results)
    assert metrics["AP"] < 0.9 and metrics["APl"] == pytest.approx(1.0)


def test_empty_submission_scores_zero() -> None:
    metrics = evaluate_coco(make_coco(GT_BOXES), [])
    assert metrics == {name: 0.0 for name in METRIC_NAMES}


def test_size_bin_without_ground_truth_is_nan() -> None:
    coco = make_coco({1: [(1, [10, 10, 20, 20])]})  # small only
    metrics = evaluate_coco(coco, gt_as_results(coco))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APs"] == pytest.approx(1.0)
    assert math.isnan(metrics["APm"]) and math.isnan(metrics["APl"])


def test_image_ids_restrict_evaluation() -> None:
    coco = make_coco(GT_BOXES)
    only_image_2 = [r for r in gt_as_results(coco) if r["image_id"] == 2]
    assert evaluate_coco(coco, only_image_2, image_ids=[2])["AP"] == pytest.approx(1.0)
    assert evaluate_coco(coco, only_image_2)["AP"] < 0.9


def test_verbose_controls_printing(capsys: pytest.CaptureFixture) -> None:
    coco = make_coco(GT_BOXES)
    evaluate_coco(coco, gt_as_results(coco))
    assert capsys.readouterr().out == ""
    evaluate_coco(coco, gt_as_results(coco), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_letterboxed_boxes_map_back_to_original_coordinates(tmp_path: Path) -> None:
    """Dataset boxes (input px) → detections_to_coco → the original annotation, AP = 1."""
    Image.fromarray(np.zeros((90, 300, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((160, 40, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    original = {1: [17.0, 22.0, 101.0, 37.0], 2: [3.0, 70.0, 30.0, 64.0]}
    document = {
        "images": [
            {"id": 1, "file_name": "wide.png", "width": 300, "height": 90},
            {"id": 2, "file_name": "tall.png", "width": 40, "height": 160},
        ],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 4, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0}
            for i, box in original.items()
        ],
        "categories": [{"id": 4, "name": "thing"}],
    }  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(document))
    dataset = CocoDetectionDataset(tmp_path, tmp_path / "gt.json", 96, train=False)
    batch = collate_detection([dataset[0], dataset[1]])
    assert batch.scales.tolist() == pytest.approx([96 / 300, 96 / 160])
    valid = batch.valid
    results = detections_to_coco(
        batch.image_ids,
        [batch.boxes[i][valid[i]] for i in range(2)],
        [torch.ones(int(valid[i].sum())) for i in range(2)],
        [batch.labels[i][valid[i]] for i in range(2)],
        batch.scales,
        dataset.category_ids,
    )
    assert [r["category_id"] for r in results] == [4, 4]
    for result in results:
        assert result["bbox"] == pytest.approx(original[result["image_id"]], abs=1e-3)
    assert evaluate_coco(dataset.coco, results)["AP"] == pytest.approx(1.0)
