"""The Phase-3 decision log: one JSON line per (training sample, step) with the levels it chose."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.levels import LEVELS

__all__ = ["SIZE_BINS", "dominant_size_bin", "DecisionLog", "read_decisions"]

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


class DecisionLog:
    """Appends every decision to ``path`` (JSON lines); usable as a ``distill_student`` on_step hook.

    Each line: image_id, step, progress, levels (list of names), size_bin, classes (names).
    """

    def __init__(self, path: Path, class_names: Sequence[str], total_steps: int) -> None:
        self.path = Path(path)
        self.class_names = list(class_names)
        self.total_steps = max(total_steps, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = False

    def __call__(
        self, step: int, batch: DetectionBatch, mask: torch.Tensor, terms: object = None
    ) -> None:
        """Log the decisions of one update (a resumed run first drops what it will redo)."""
        if not self._started:
            self.truncate_after(step - 1)
            self._started = True
        lines = []
        boxes, labels, valid = batch.boxes.cpu(), batch.labels.cpu(), batch.valid.cpu()
        for i in range(len(batch)):
            sample_labels = labels[i][valid[i]].tolist()
            record: dict[str, Any] = {
                "image_id": int(batch.image_ids[i]),
                "step": step,
                "progress": step / self.total_steps,
                "levels": [lv for lv, on in zip(LEVELS, mask[i].tolist(), strict=True) if on],
                "size_bin": dominant_size_bin(boxes[i][valid[i]], float(batch.scales[i])),
                "classes": sorted({self.class_names[c] for c in sample_labels}),
            }
            lines.append(json.dumps(record))
        with self.path.open("a") as handle:
            handle.write("\n".join(lines) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run redoes those steps)."""
        if not self.path.is_file():
            return
        kept = [
            line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_decisions(path: Path) -> list[dict[str, Any]]:
    """All records of a decision log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
