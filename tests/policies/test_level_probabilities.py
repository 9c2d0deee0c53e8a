"""Per-level marginals of the subset policy."""

from __future__ import annotations

import torch

from policies.level_policy_module import build_level_module
from policies.level_probabilities import level_selection_probabilities
from rlpkd.levels import NUM_SUBSETS, subsets_to_masks


def test_marginals_sum_the_subsets_holding_each_level() -> None:
    torch.manual_seed(0)
    module = build_level_module(5, [8])
    obs = torch.randn(7, 5)
    marginals = level_selection_probabilities(module, obs)
    probabilities = torch.softmax(module.subset_logits(obs).double(), dim=-1)
    masks = subsets_to_masks(torch.arange(NUM_SUBSETS))
    for level in range(4):
        expected = probabilities[:, masks[:, level]].sum(dim=1).float()
        torch.testing.assert_close(marginals[:, level], expected)
    assert bool(((marginals >= 0) & (marginals <= 1)).all())
