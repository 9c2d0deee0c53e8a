"""Level names, level-set parsing and the subset encoding (bit i of a subset index = LEVELS[i])."""

from __future__ import annotations

import pytest
import torch

from rlpkd.errors import ConfigError
from rlpkd.levels import (
    LEVELS,
    NUM_SUBSETS,
    all_subsets,
    index_to_subset,
    levels_to_mask,
    mask_to_levels,
    masks_to_subsets,
    parse_levels,
    subset_to_index,
    subsets_to_masks,
)


def test_bit_i_of_a_subset_index_is_level_i():
    assert NUM_SUBSETS == 16 == len(all_subsets())
    assert index_to_subset(0) == () and index_to_subset(15) == LEVELS
    for i, level in enumerate(LEVELS):
        assert subset_to_index((level,)) == 1 << i
        assert index_to_subset(1 << i) == (level,)
    assert subset_to_index(("P5", "P2")) == 0b1001
    with pytest.raises(ValueError, match="outside"):
        index_to_subset(NUM_SUBSETS)


def test_batched_helpers_round_trip_all_16_subsets_as_the_scalar_encoding():
    indices = torch.arange(NUM_SUBSETS)
    masks = subsets_to_masks(indices)
    assert masks.shape == (NUM_SUBSETS, len(LEVELS)) and masks.dtype == torch.bool
    for index in range(NUM_SUBSETS):
        subset = index_to_subset(index)
        assert torch.equal(masks[index], levels_to_mask(subset))
        assert mask_to_levels(masks[index]) == subset
    subsets = masks_to_subsets(masks)
    assert subsets.dtype == torch.long and torch.equal(subsets, indices)
    assert masks_to_subsets(levels_to_mask(("P3", "P4"))).item() == subset_to_index(("P3", "P4"))


def test_batched_helpers_keep_leading_dimensions_and_accept_0_1_masks():
    indices = torch.tensor([[0, 5], [10, 15]])
    masks = subsets_to_masks(indices)
    assert masks.shape == (2, 2, len(LEVELS))
    assert masks[0, 1].tolist() == [True, False, True, False]  # 5 = P2 + P4
    assert torch.equal(masks_to_subsets(masks), indices)
    assert torch.equal(masks_to_subsets(masks.float()), indices)


def test_parse_levels_orders_and_rejects_unknown_names():
    assert parse_levels("p4, P2") == ("P2", "P4")
    assert parse_levels("all") == LEVELS and parse_levels("none") == ()
    with pytest.raises(ConfigError, match="P7"):
        parse_levels("P2,P7")
