"""COCO AP on the images of each scale regime: pycocotools with ``params.imgIds`` restricted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycocotools.coco import COCO

from rlpkd.evaluation.coco_eval import evaluate_coco

__all__ = ["regime_image_ids", "evaluate_by_regime"]


def regime_image_ids(
    image_regimes: Mapping[int, str], image_ids: Sequence[int] | None = None
) -> dict[str, list[int]]:
    """Regime -> its image ids (sorted), over ``image_ids`` (default: every image of the map),
    regimes in order of first appearance in sorted id order."""
    ids = sorted(image_regimes) if image_ids is None else sorted(int(i) for i in image_ids)
    groups: dict[str, list[int]] = {}
    for image_id in ids:
        groups.setdefault(image_regimes[image_id], []).append(image_id)
    return groups


def evaluate_by_regime(
    coco_gt: COCO, predictions: list[dict], regime_ids: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, float]]:
    """Regime -> ``evaluate_coco`` metrics on that regime's images only (AP, AP50, …; fractions).

    Detections on other images are ignored by COCOeval (``params.imgIds``), so one prediction
    file scores every regime.
    """
    return {
        regime: evaluate_coco(coco_gt, predictions, list(ids)) for regime, ids in regime_ids.items()
    }
