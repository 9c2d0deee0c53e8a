"""What a search method works with: config, the search split, the frozen teacher, FLOPs, device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.models.detector import PyramidDetector

__all__ = ["SearchContext"]


@dataclass
class SearchContext:
    """Everything a search method needs.

    Attributes:
        config: the experiment (``config.search`` holds the methods' settings).
        datasets: the search split (``rlpkd.data.build.heldout_split``): ``train`` to train on, ``val`` to score on.
        teacher: the frozen teacher.
        flops: the FLOPs model (kd_flops per subset, for the FLOPs penalty and the cost).
        device: where to train.
        seed: seeds the search (student init, data order, sampling).
        progress: show tqdm bars.
    """

    config: Config
    datasets: DetectionDatasets
    teacher: PyramidDetector
    flops: FlopsModel
    device: torch.device
    seed: int
    progress: bool = True

    def kd_fraction(self, levels: tuple[str, ...]) -> float:
        """kd_flops(levels) / kd_flops(all levels) (``FlopsModel.fraction``)."""
        return self.flops.fraction(levels)

    def score(self, ap: float, levels: tuple[str, ...]) -> float:
        """The search objective every method maximises: AP - lam * kd fraction."""
        return ap - self.config.search.lam * self.kd_fraction(levels)
