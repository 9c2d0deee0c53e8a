"""COCO's area bins have one home: ``size_bin``, which ``dominant_size_bin`` and the generator use."""

from __future__ import annotations

import pytest
import torch

from rlpkd.data.size_bins import COCO_AREA_EDGES, SIZE_BINS, dominant_size_bin, size_bin


@pytest.mark.parametrize(
    ("area", "expected"),
    [(1.0, "small"), (1023.9, "small"), (1024.0, "medium"), (9215.9, "medium"), (9216.0, "large")],
)
def test_size_bin_edges_follow_coco_small_below_32_squared(area: float, expected: str) -> None:
    assert size_bin(area) == expected


def test_dominant_size_bin_agrees_with_size_bin_on_the_edges() -> None:
    """A 32x32 box is medium for both (an area on an edge goes to the larger bin)."""
    for side, area in zip((32.0, 96.0), COCO_AREA_EDGES, strict=True):
        box = torch.tensor([[0.0, 0.0, side, side]])
        assert dominant_size_bin(box, 1.0) == size_bin(area) == SIZE_BINS[1 + int(side == 96.0)]


def test_dominant_size_bin_breaks_ties_towards_the_smaller_bin() -> None:
    boxes = torch.tensor([[0.0, 0, 100, 100], [0.0, 0, 10, 10], [0.0, 0, 40, 40]])
    assert dominant_size_bin(boxes, 1.0) == "small"
    assert dominant_size_bin(boxes[[0, 0, 2]], 1.0) == "large"
