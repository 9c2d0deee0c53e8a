"""The Phase-3 decision log: one JSON line per (training sample, step) with the levels it chose."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.data.size_bins import dominant_size_bin
from rlpkd.levels import LEVELS

__all__ = ["DecisionLog", "read_decisions"]


class DecisionLog:
    """Appends every decision to ``path`` (JSON lines); usable as a ``distill_student`` on_step hook.

    Each line: image_id, step, progress, levels (list of names), size_bin, classes (names) and,
    when ``image_regimes`` (image id -> scale regime, ``rlpkd.data.synthetic.image_regimes``) is
    given, regime.
    """

    def __init__(
        self,
        path: Path,
        class_names: Sequence[str],
        total_steps: int,
        image_regimes: Mapping[int, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.class_names = list(class_names)
        self.image_regimes = dict(image_regimes) if image_regimes is not None else None
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
            if self.image_regimes is not None:
                record["regime"] = self.image_regimes.get(record["image_id"], "unknown")
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
