"""AP per scale regime: COCOeval restricted to the regime's images."""

from __future__ import annotations

import math

import pytest

from rlpkd.data.coco import CocoDetectionDataset
from rlpkd.data.embedded import ensure_embedded_dataset
from rlpkd.data.synthetic import image_regimes
from rlpkd.evaluation.regime_ap import evaluate_by_regime, regime_image_ids


@pytest.fixture(scope="module")
def per_image_val(tmp_path_factory) -> CocoDetectionDataset:
    root = ensure_embedded_dataset(
        tmp_path_factory.mktemp("regime_ap"), 4, 16, 64, 0, "per-image", progress=False
    )
    return CocoDetectionDataset(
        root / "images" / "val", root / "annotations" / "val.json", 64, train=False
    )


def test_perfect_detections_on_one_regime_score_only_that_regime(per_image_val) -> None:
    regimes = image_regimes(per_image_val.annotation_file)
    groups = regime_image_ids(regimes, per_image_val.image_ids)
    assert sorted(i for ids in groups.values() for i in ids) == sorted(per_image_val.image_ids)
    assert all(regimes[i] == regime for regime, ids in groups.items() for i in ids)
    assert len(groups) >= 2
    target = next(iter(groups))
    coco = per_image_val.coco
    perfect = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in coco.dataset["annotations"]
        if regimes[a["image_id"]] == target
    ]
    scores = evaluate_by_regime(coco, perfect, groups)
    assert scores[target]["AP"] == pytest.approx(1.0)
    for regime, metrics in scores.items():
        if regime != target:
            assert metrics["AP"] == 0.0 or math.isnan(metrics["AP"])
