"""Evaluate a detector on a COCO-format split with pycocotools' COCOeval."""

from __future__ import annotations

import torch
from tqdm import tqdm

from rlpkd.config import EvalConfig
from rlpkd.data.coco import CocoDetectionDataset, build_dataloader
from rlpkd.evaluation.coco_eval import detections_to_coco, evaluate_coco
from rlpkd.models.detector import PyramidDetector
from rlpkd.runtime import autocast_for

__all__ = ["evaluate_detector"]


@torch.no_grad()
def evaluate_detector(
    model: PyramidDetector,
    dataset: CocoDetectionDataset,
    settings: EvalConfig,
    device: torch.device,
    amp: bool = False,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict]]:
    """COCO metrics (AP, AP50, AP75, APs, APm, APl as fractions) and the predictions."""
    was_training = model.training
    model.eval()
    loader = build_dataloader(dataset, settings.batch_size, shuffle=False, seed=0)
    predictions: list[dict] = []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch = batch.to(device)
        with autocast_for(device, amp):
            detections = model.predict(
                batch.images,
                score_threshold=settings.score_threshold,
                max_detections=settings.max_detections,
            )
        predictions += detections_to_coco(
            batch.image_ids,
            [d.boxes for d in detections],
            [d.scores for d in detections],
            [d.labels for d in detections],
            batch.scales,
            dataset.category_ids,
        )
    model.train(was_training)
    return evaluate_coco(dataset.coco, predictions, dataset.image_ids), predictions
