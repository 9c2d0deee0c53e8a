"""What a level policy believes per level: P(level l is selected | s), marginalised over subsets."""

from __future__ import annotations

import torch

from policies.level_policy_module import LevelSelectionModule
from rlpkd.levels import NUM_SUBSETS, subsets_to_masks

__all__ = ["level_selection_probabilities"]


@torch.no_grad()
def level_selection_probabilities(module: LevelSelectionModule, obs: torch.Tensor) -> torch.Tensor:
    """[N, 4] ``P(l ∈ a | s) = Σ_{a ∋ l} π(a | s)`` for observations [N, obs_dim].

    The policy is a categorical over the 16 subsets (``subset_logits``); a level's marginal is the
    total probability of the subsets that hold it (columns in ``LEVELS`` order), on the CPU.
    """
    device = next(module.parameters()).device
    probabilities = torch.softmax(module.subset_logits(obs.to(device)).double(), dim=-1).cpu()
    membership = subsets_to_masks(torch.arange(NUM_SUBSETS)).double()  # [16, 4]
    return (probabilities @ membership).float()
