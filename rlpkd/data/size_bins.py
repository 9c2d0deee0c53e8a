"""COCO's object-size bins (small < 32², medium < 96², large) by box area in original pixels.

The one home of the bin edges: the embedded generator (its size bands and single-band regimes),
its object counts and the decision log's per-sample size all classify through ``size_bin``.
"""

from __future__ import annotations

import bisect

import torch

__all__ = ["SIZE_BINS", "COCO_AREA_EDGES", "size_bin", "dominant_size_bin"]

SIZE_BINS: tuple[str, ...] = ("small", "medium", "large")
COCO_AREA_EDGES: tuple[float, float] = (32.0**2, 96.0**2)
"""Box areas (px²) where small ends and where large begins; an area on an edge is the larger bin."""


def size_bin(area: float) -> str:
    """COCO's size bin of one box by its area: ``small`` (< 32²), ``medium`` (< 96²) or ``large``."""
    return SIZE_BINS[bisect.bisect_right(COCO_AREA_EDGES, area)]


def dominant_size_bin(boxes: torch.Tensor, scale: float) -> str:
    """The COCO size bin (by area in original pixels) holding most of a sample's boxes.

    Ties go to the smaller bin; a sample without boxes is 'none'.
    """
    if boxes.numel() == 0:
        return "none"
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / scale**2
    bins = [size_bin(float(area)) for area in areas]
    counts = [bins.count(name) for name in SIZE_BINS]
    return SIZE_BINS[counts.index(max(counts))]
