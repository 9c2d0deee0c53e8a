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


def test_factorised_head_is_a_product_of_independent_level_bernoullis() -> None:
    """rl.policy_head: factorised — π(a|s) = Π_l p_l^a_l (1-p_l)^(1-a_l), p_l = sigmoid(u_l)."""
    torch.manual_seed(0)
    module = build_level_module(5, [8], policy_head="factorised")
    with torch.no_grad():  # move the head off its near-zero init so the check has teeth
        module._policy_head.weight.normal_(0.0, 1.0)
        module._policy_head.bias.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0]))
    obs = torch.randn(6, 5)
    level_logits = module._policy_head(module._encoder(obs)).detach().double()
    p = torch.sigmoid(level_logits)  # [6, 4]
    masks = subsets_to_masks(torch.arange(NUM_SUBSETS)).double()  # [16, 4]
    product = (p[:, None, :] * masks + (1 - p[:, None, :]) * (1 - masks)).prod(dim=-1)
    torch.testing.assert_close(torch.softmax(module.subset_logits(obs).double(), -1), product)
    torch.testing.assert_close(level_selection_probabilities(module, obs), p.float())
    assert module.subset_logits(obs).shape == (6, NUM_SUBSETS)
    assert module._policy_head.out_features == 4
