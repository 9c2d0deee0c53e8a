"""Spending a KD budget exactly: per batch, the (sample, subset) choices that fit what is left.

A budget is a fraction ``b`` of all-level KD FLOPs per training image. ``BudgetAccount`` keeps what
a run may spend so far (``b`` times the images it has seen, plus this batch) against what it spent,
so a batch that spends less leaves the difference to the next one and every epoch's kd FLOPs end
within one sample's cost of ``b``. With a *pace* (``rl.budget_pace``: weights of equal stretches of
training progress) an image seen in stretch ``j`` adds ``b · k · w_j / Σw`` instead of ``b``: the
run as a whole spends ``b`` (to within the steps' rounding into stretches), its epochs do not.

``allocate_subsets`` picks each sample's subset from per-(sample, subset) scores under a batch
allowance: the Lagrangian choice ``argmax_a score(i, a) − μ · cost(a)``, with ``μ`` found by
bisection (negative ``μ`` spends *more* than the scores alone would, so the budget is met, not
only respected), then the samples on the margin switched to their dearer choice, best gain per
FLOP first, while the allowance lasts (the greedy knapsack step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["allocate_subsets", "BudgetAccount", "pace_rate"]

_BISECTION_STEPS = 60


def _choices(scores: torch.Tensor, costs: torch.Tensor, price: float) -> torch.Tensor:
    return (scores - price * costs).argmax(dim=1)


def allocate_subsets(scores: torch.Tensor, costs: torch.Tensor, allowance: float) -> torch.Tensor:
    """[B] subset indices of highest total score whose total cost is at most ``allowance``,
    spending as much of it as the choices allow.

    Args:
        scores: [B, S] score of each subset per sample; ``-inf`` rules a subset out. Subset 0 must
            be allowed for every sample and cost nothing (no KD).
        costs: [S] cost of each subset (a fraction of all-level KD FLOPs), ``costs[0] == 0``.
        allowance: what the batch may spend, in the units of ``costs``.
    """
    scores = scores.double()
    costs = costs.double().to(scores.device)
    if not bool(torch.isfinite(scores[:, 0]).all()) or float(costs[0]) != 0.0:
        raise ValueError("subset 0 (no KD) must be allowed for every sample and cost nothing")
    spread = float(torch.where(torch.isfinite(scores), scores, 0.0).abs().max()) * 2 + 1.0
    positive = costs[costs > 0]
    bound = spread / float(positive.min()) if len(positive) else 1.0

    def spent(price: float) -> float:
        return float(costs[_choices(scores, costs, price)].sum())

    if spent(-bound) <= allowance:
        return _choices(scores, costs, -bound)  # even the dearest choices fit
    if spent(bound) > allowance:
        return torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    low, high = -bound, bound  # spent(low) > allowance >= spent(high)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if spent(middle) > allowance:
            low = middle
        else:
            high = middle
    chosen = _choices(scores, costs, high)
    dearer = _choices(scores, costs, low)
    left = allowance - float(costs[chosen].sum())
    extra = costs[dearer] - costs[chosen]
    rows = torch.nonzero(extra > 0).flatten()
    gain = scores[rows, dearer[rows]] - scores[rows, chosen[rows]]
    for row in rows[torch.argsort(-(gain / extra[rows]), stable=True)].tolist():
        if float(extra[row]) <= left:
            chosen[row] = dearer[row]
            left -= float(extra[row])
    return _spend_what_is_left(scores, costs, chosen, left)


def _spend_what_is_left(
    scores: torch.Tensor, costs: torch.Tensor, chosen: torch.Tensor, left: float
) -> torch.Tensor:
    """Upgrade samples to dearer allowed subsets that still fit, the best score gain first (the
    dearest on ties), until none fits: the budget is to be met, not only respected."""
    rows = torch.arange(len(chosen), device=scores.device)
    while True:
        extra = costs[None, :] - costs[chosen][:, None]  # [B, S]
        gain = scores - scores[rows, chosen][:, None]
        fits = (extra > 0) & (extra <= left + 1e-12) & torch.isfinite(scores)
        if not bool(fits.any()):
            return chosen
        key = torch.where(fits, gain * 1e6 + extra, torch.full_like(gain, float("-inf")))
        flat = int(torch.argmax(key))
        row, subset = divmod(flat, scores.shape[1])
        left -= float(extra[row, subset])
        chosen[row] = subset


def pace_rate(pace: Sequence[float], progress: float) -> float:
    """The budget's rate at ``progress`` (in [0, 1]) under ``pace``, relative to an even spread:
    ``k · w_j / Σw`` for the stretch ``j`` of the ``k`` equal stretches that holds ``progress``;
    1 with no pace (an empty ``pace``)."""
    if not pace:
        return 1.0
    stretch = min(max(int(progress * len(pace)), 0), len(pace) - 1)
    return len(pace) * float(pace[stretch]) / float(sum(pace))


class BudgetAccount:
    """What a run may still spend: ``budget`` × images seen (this batch included) − spent, each
    image weighted by ``pace_rate(pace, progress)`` when the run has a pace.

    Costs are fractions of all-level KD FLOPs per image, so ``budget`` is one too.
    """

    def __init__(self, budget: float, pace: Sequence[float] = ()) -> None:
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"a KD budget is a fraction of all-level kd FLOPs; got {budget}")
        if pace and (min(pace) < 0 or sum(pace) <= 0):
            raise ValueError(f"a budget pace is non-negative weights, not all 0; got {list(pace)}")
        self.budget = float(budget)
        self.pace = tuple(float(w) for w in pace)
        self.images = 0
        self.spent = 0.0
        self.allowed = 0.0
        """With a pace: what the images seen so far were allowed (``budget × images`` without)."""

    def allowance(self, batch_size: int, progress: float = 0.0) -> float:
        """What a batch of ``batch_size`` images at training ``progress`` may spend now."""
        if not self.pace:
            return self.budget * (self.images + batch_size) - self.spent
        return self.allowed + self._added(batch_size, progress) - self.spent

    def charge(self, batch_size: int, cost: float, progress: float = 0.0) -> None:
        """Record a batch of ``batch_size`` images at ``progress`` that spent ``cost``."""
        self.allowed += self._added(batch_size, progress)
        self.images += int(batch_size)
        self.spent += float(cost)

    def _added(self, batch_size: int, progress: float) -> float:
        return self.budget * batch_size * pace_rate(self.pace, progress)

    def state_dict(self) -> dict[str, Any]:
        """The counts (for a resumed run)."""
        state = {"budget": self.budget, "images": self.images, "spent": self.spent}
        return state | ({"allowed": self.allowed} if self.pace else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.images, self.spent = int(state["images"]), float(state["spent"])
        self.allowed = float(state.get("allowed", self.budget * self.images))
