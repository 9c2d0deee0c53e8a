"""COCO's object-size bins (small < 32², medium < 96², large) by box area in original pixels."""

from __future__ import annotations

import torch

__all__ = ["SIZE_BINS", "dominant_size_bin"]

SIZE_BINS: tuple[str, ...] = ("small", "medium", "large")
_COCO_AREA_EDGES = (32.0**2, 96.0**2)


def dominant_size_bin(boxes: torch.Tensor, scale: float) -> str:
    """The COCO size bin (by area in original pixels) holding most of a sample's boxes.

    Ties go to the smaller bin; a sample without boxes is 'none'.
    """
    if boxes.numel() == 0:
        return "none"
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / scale**2
    bins = torch.bucketize(area, torch.tensor(_COCO_AREA_EDGES, dtype=area.dtype))
    counts = torch.bincount(bins, minlength=len(SIZE_BINS))
    return SIZE_BINS[int(torch.argmax(counts))]
