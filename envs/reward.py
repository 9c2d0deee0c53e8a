"""The reward of one level-selection decision: KD improvement of its sample minus FLOPs (DESIGN §5)."""

from __future__ import annotations

import torch
from torch import Tensor

from rlpkd.levels import NUM_LEVELS, masks_to_subsets

__all__ = [
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
