"""The reward of one level-selection decision: the value of its chosen levels minus their FLOPs
(DESIGN §5).

Two rewards, chosen by ``rl.reward``:

- ``value`` (``value_rewards``): ``Σ_{l∈a_i} v_il / s − λ · kd_flops(a_i) / kd_flops(all)``, with
  ``v_il`` the per-(sample, level) value signal of ``rlpkd.distill.level_value`` (the first-order
  effect of distilling level l on sample i on a held-out detection loss) and ``s`` the running
  typical value of distilling all levels (``RunningValueScale``).
- ``gap_drop`` (``sample_rewards``): the sample's normalised all-level KD-gap drop over the shared
  update minus the same price (the first version's reward, kept for comparison).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlpkd.levels import NUM_LEVELS, masks_to_subsets

REWARDS = ("value", "gap_drop")
"""The names ``rl.reward`` accepts."""
VALUE_SCALE_MOMENTUM = 0.99
"""Momentum of ``RunningValueScale``'s EMA once it has seen 100 updates (a running mean before)."""
VALUE_SCALE_FLOOR = 1e-12
"""``s`` never falls below this (a student whose values are all 0 gets ``−λ · fraction``)."""


class RunningValueScale:
    """``s``: the typical value of distilling all levels on one sample, the value reward's unit.

    A running mean of the batch mean of ``|Σ_l v_il|`` over the updates seen so far that turns
    into an EMA of momentum ``VALUE_SCALE_MOMENTUM`` (about the last 100 updates): update t folds
    its batch in with weight ``max(1/t, 1 − momentum)``, so the first batch initialises it without
    dominating the next ones (a fresh student's first batch, in the LR warm-up, has values orders
    of magnitude below a later stage's). It is updated *before* it normalises a batch and clamped
    to at least ``VALUE_SCALE_FLOOR``. With it, ``λ`` keeps its meaning: the price of all four levels in
    units of the typical value of distilling all of them (a typical sample that distils every level
    gets ``±1 − λ``). The env keeps one for its whole life (all episodes and snapshot stages), so
    one exchange rate between value and FLOPs holds over the student's training: a late stage,
    whose values are small, earns less.
    """

    def __init__(self, momentum: float = VALUE_SCALE_MOMENTUM) -> None:
        self.momentum = float(momentum)
        self.value: float | None = None
        self.updates = 0

    def update(self, values: Tensor) -> float:
        """Fold the batch's ``[B, 4]`` values in; returns the scale ``s`` to divide them by."""
        batch_mean = float(values.detach().float().sum(dim=1).abs().mean())
        self.updates += 1
        weight = max(1.0 / self.updates, 1.0 - self.momentum)
        previous = batch_mean if self.value is None else self.value
        self.value = (1.0 - weight) * previous + weight * batch_mean
        return max(self.value, VALUE_SCALE_FLOOR)


def value_rewards(
    values: Tensor, masks: Tensor, scale: float, subset_flops_fraction: Tensor, lam: float
) -> Tensor:
    """Per-sample rewards [B] from the value signal::

        reward_i = Σ_{l∈a_i} v_il / s  −  λ · kd_flops(a_i) / kd_flops(all)

    Args:
        values: [B, 4] ``v_il`` (``rlpkd.distill.level_value.level_values(...).values``), > 0 where
            distilling level l on sample i is predicted to lower the held-out detection loss.
        masks: [B, 4] bool, the levels each sample chose.
        scale: ``s`` > 0 (``RunningValueScale.update``).
        subset_flops_fraction: [B] ``kd_flops(a_i) / kd_flops(all)`` (``subset_flops_fractions``).
        lam: λ, the price of all levels in units of ``s``.
    """
    if values.shape != masks.shape or values.shape[1:] != (NUM_LEVELS,):
        raise ValueError(
            f"values {tuple(values.shape)} and masks {tuple(masks.shape)} must both be "
            f"[B, {NUM_LEVELS}]"
        )
    if not scale > 0:
        raise ValueError(f"the value scale must be > 0, got {scale}")
    chosen = torch.where(masks.cpu(), values.detach().float().cpu(), 0.0).sum(dim=1)
    return chosen / scale - lam * subset_flops_fraction.float().cpu()


def leave_one_out_baseline(rewards: Tensor) -> Tensor:
    """[B] ``r_i − mean_{j≠i} r_j``: the rewards of one update less the leave-one-out mean (RLOO,
    Kool et al., "Buy 4 REINFORCE samples, get a baseline for free!", 2019). The baseline of
    decision i does not depend on its own action, so the policy gradient stays unbiased, while what
    the B decisions of one update share (the step's held-out gradient, its learning rate) cancels.
    """
    if rewards.numel() < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 decisions per update")
    others = (rewards.sum() - rewards) / (rewards.numel() - 1)
    return rewards - others


__all__ = [
    "leave_one_out_baseline",
    "REWARDS",
    "VALUE_SCALE_MOMENTUM",
    "RunningValueScale",
    "value_rewards",
    "subset_flops_fractions",
    "reward_level_scale",
    "normalised_gap_drop",
    "sample_rewards",
]


def subset_flops_fractions(masks: Tensor, fraction_table: Tensor) -> Tensor:
    """[B] FLOPs fraction of each sample's chosen levels (``masks`` [B, 4] bool; ``fraction_table``
    [16] on the CPU, ``FlopsModel.subset_kd_fractions()``)."""
    return fraction_table[masks_to_subsets(masks.cpu())]


def reward_level_scale(running_scale: Tensor, initialised: Tensor, gap_before: Tensor) -> Tensor:
    """[4] per-level gap scale: the objective's running scale, or, at a level it has not seen yet,
    the batch's mean gap before the update (so a fresh student's first step is normalised too)."""
    fallback = gap_before.detach().float().mean(dim=0).cpu()
    return torch.where(initialised.cpu(), running_scale.detach().float().cpu(), fallback)


def normalised_gap_drop(gap_before: Tensor, gap_after: Tensor, level_scale: Tensor) -> Tensor:
    """[B] ``Σ_l (gap_before − gap_after)_il / scale_l``: the sample's normalised KD improvement."""
    scale = level_scale.float().cpu().clamp_min(1e-12)
    return ((gap_before.float().cpu() - gap_after.float().cpu()) / scale).sum(dim=1)


def sample_rewards(
    gap_before: Tensor,
    gap_after: Tensor,
    level_scale: Tensor,
    masks: Tensor,
    subset_flops_fraction: Tensor,
    lam: float,
) -> Tensor:
    """Per-sample rewards [B] of one student update::

        reward_i = Σ_l (gap_before − gap_after)_il / scale_l  −  λ · kd_flops(levels_i) / kd_flops(all)

    Args:
        gap_before: [B, 4] raw teacher–student KD loss of each sample at every level (all levels,
            whatever was chosen), measured without an update just before the step.
        gap_after: [B, 4] the same, on the same batch, just after the step.
        level_scale: [4] per-level normalisation (``reward_level_scale``), so no level dominates
            by its raw size.
        masks: [B, 4] bool, the levels each sample chose (checks the FLOPs fractions: an empty
            subset costs nothing).
        subset_flops_fraction: [B] ``kd_flops(levels_i) / kd_flops(all)`` (``subset_flops_fractions``).
        lam: λ, the price of distilling all levels in units of normalised gap drop.
    """
    if gap_before.shape != gap_after.shape or masks.shape != gap_before.shape:
        raise ValueError(
            f"gap_before {tuple(gap_before.shape)}, gap_after {tuple(gap_after.shape)} and masks "
            f"{tuple(masks.shape)} must all be [B, {NUM_LEVELS}]"
        )
    fraction = subset_flops_fraction.float().cpu()
    if bool((fraction[~masks.cpu().any(dim=1)] != 0).any()):
        raise ValueError("a sample that chose no level has a non-zero FLOPs fraction")
    return normalised_gap_drop(gap_before, gap_after, level_scale) - lam * fraction
