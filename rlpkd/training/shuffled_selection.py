"""The shuffled-mask control: a selector's own masks, permuted across the samples of each batch.

Same subsets and so the same KD FLOPs as the selector it wraps, but no conditioning on the sample:
if a per-sample policy beats its shuffled control, its choices matter *for the sample they were
made for*, not only as a level mix (a permutation test in the spirit of the "shuffled labels"
controls of DVRL, Yoon et al. 2020).
"""

from __future__ import annotations

from typing import Any

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.training.level_selection import (
    DelegatingSelector,
    FeatureObservingSelector,
    FingerprintedSelector,
    LevelSelector,
)

__all__ = ["ShuffledMaskLevels", "SHUFFLED_SUFFIX"]

SHUFFLED_SUFFIX = ":shuffled"
"""Appended to the wrapped selector's name (e.g. ``rl-policy:shuffled``)."""


class ShuffledMaskLevels(DelegatingSelector):
    """Wraps ``inner``: each batch's [B, 4] mask is ``inner``'s, rows permuted at random (seeded).

    It observes and keeps state exactly as ``inner`` does (``DelegatingSelector``; the permutation
    is applied after ``inner`` chose), so a policy's running statistics evolve from the masks
    actually used.
    """

    wrapped_attribute = "inner"

    def __init__(self, inner: LevelSelector, seed: int) -> None:
        self.inner = inner
        self.name = f"{inner.name}{SHUFFLED_SUFFIX}"
        inner_print = inner.fingerprint if isinstance(inner, FingerprintedSelector) else inner.name
        self.fingerprint = f"{inner_print}{SHUFFLED_SUFFIX}:{seed}"
        self._generator = torch.Generator().manual_seed(seed)

    def _shuffle(self, mask: torch.Tensor) -> torch.Tensor:
        order = torch.randperm(mask.shape[0], generator=self._generator)
        return mask[order.to(mask.device)]

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """``inner``'s mask for ``batch`` with its rows permuted."""
        return self._shuffle(self.inner.select(batch, progress))

    def select_from_features(
        self, batch: DetectionBatch, features: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        """As ``select``, from the step's own features when ``inner`` observes them."""
        if isinstance(self.inner, FeatureObservingSelector):
            return self._shuffle(self.inner.select_from_features(batch, features, progress))
        return self.select(batch, progress)

    def own_state(self) -> dict[str, Any]:
        """The permutation RNG (``DelegatingSelector`` adds ``inner``'s state)."""
        return {"generator": self._generator.get_state()}

    def load_own_state(self, state: dict[str, Any]) -> None:
        """Restore the permutation RNG."""
        self._generator.set_state(state["generator"])
