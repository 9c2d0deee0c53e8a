"""COCO bbox evaluation: detections in input pixels → COCO results → AP, AP50, AP75, APs/m/l."""

from __future__ import annotations

import contextlib
import io
import math

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["METRIC_NAMES", "detections_to_coco", "evaluate_coco"]

# The first six entries of COCOeval.stats, in order.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco(
    image_ids: torch.Tensor,
    boxes: list[torch.Tensor],
    scores: list[torch.Tensor],
    labels: list[torch.Tensor],
    scales: torch.Tensor,
    category_ids: list[int],
) -> list[dict]:
    """Per-image detections as COCO result dicts, in original-image coordinates.

    Args:
        image_ids: [B] COCO image ids.
        boxes: B tensors [N_i, 4], xyxy in input (letterboxed) pixels.
        scores: B tensors [N_i].
        labels: B tensors [N_i] of contiguous class indices.
        scales: [B] input pixels per original pixel (``DetectionBatch.scales``).
        category_ids: COCO category id of each contiguous class index.

    Returns:
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts; ``category_id`` is
        the original COCO id (e.g. 90 for label 79 of COCO's 80 classes).

    Raises:
        ValueError: a label outside ``[0, len(category_ids))`` (a bug: a padding label -1 would
            otherwise silently become the last category).
    """
    results = []
    for i, image_id in enumerate(image_ids.tolist()):
        if labels[i].numel() and (
            int(labels[i].min()) < 0 or int(labels[i].max()) >= len(category_ids)
        ):
            raise ValueError(
                f"detection labels of image {image_id} lie outside [0, {len(category_ids)}): "
                f"{sorted(set(labels[i].tolist()))}"
            )
        xyxy = boxes[i].detach().float().cpu() / float(scales[i])
        xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
        for bbox, score, label in zip(
            xywh, scores[i].detach().cpu().tolist(), labels[i].detach().cpu().tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "bbox": bbox,
                    "score": float(score),
                }
            )
    return results


def evaluate_coco(
    coco_gt: COCO,
    results: list[dict],
    image_ids: list[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Run COCOeval (bbox) and return AP, AP50, AP75, APs, APm, APl as fractions in [0, 1].

    Args:
        coco_gt: the ground truth (``CocoDetectionDataset.coco``, whose crowd boxes and boxes
            the dataset cannot train on are ignore regions: a detection matched to one is
            neither a true nor a false positive, COCO's rule for crowds).
        results: COCO result dicts (``detections_to_coco``); not modified.
        image_ids: evaluate only these images (default: every image in ``coco_gt``).
        verbose: let COCOeval print its progress and summary table.

    A size bin with no ground-truth box in the evaluated images gives NaN (COCOeval's -1), so it
    is not mistaken for a score of zero. An empty ``results`` gives 0.0 for every bin that has
    ground truth.
    """
    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        if results:
            # loadRes adds fields to the dicts it is given.
            coco_dt = coco_gt.loadRes([dict(result) for result in results])
        else:
            # loadRes cannot take an empty list; an empty result set scores zero recall.
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "categories": list(coco_gt.dataset.get("categories", [])),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        name: float(value) if value >= 0 else math.nan
        for name, value in zip(METRIC_NAMES, evaluator.stats[: len(METRIC_NAMES)], strict=True)
    }
