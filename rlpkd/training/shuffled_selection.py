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
from rlpkd.distill.objective import ObjectiveTerms
from rlpkd.training.level_selection import (
    FeatureObservingSelector,
    FingerprintedSelector,
    LevelSelector,
    StatefulSelector,
    StepObservingSelector,
    StudentObservingSelector,
)

__all__ = ["ShuffledMaskLevels", "SHUFFLED_SUFFIX"]

SHUFFLED_SUFFIX = ":shuffled"
"""Appended to the wrapped selector's name (e.g. ``rl-policy:shuffled``)."""


class ShuffledMaskLevels:
    """Wraps ``inner``: each batch's [B, 4] mask is ``inner``'s, rows permuted at random (seeded).

    It observes and keeps state exactly as ``inner`` does (the permutation is applied after
    ``inner`` chose), so a policy's running statistics evolve from the masks actually used.
    """

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

    def set_student(self, student: torch.nn.Module) -> None:
        """Hand ``inner`` the student (when it observes one)."""
        if isinstance(self.inner, StudentObservingSelector):
            self.inner.set_student(student)

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """Pass a finished step to ``inner`` (a policy's running gap), when it observes steps."""
        if isinstance(self.inner, StepObservingSelector):
            self.inner.observe_step(batch, mask, terms)

    def state_dict(self) -> dict[str, Any]:
        """The permutation RNG and ``inner``'s state."""
        inner = self.inner.state_dict() if isinstance(self.inner, StatefulSelector) else {}
        return {"generator": self._generator.get_state(), "inner": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self._generator.set_state(state["generator"])
        if isinstance(self.inner, StatefulSelector):
            self.inner.load_state_dict(state["inner"])
