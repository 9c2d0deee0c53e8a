"""The rewards of a level-selection decision: one class per reward behind one protocol
(``DecisionReward``) and registry (``REWARDS``, the names ``rl.reward`` accepts).

- ``value`` (``envs.rewards.value``): the value signal of the chosen levels minus their FLOPs;
  full information (the values of all four levels, so the reward of every subset).
- ``gap_drop`` (``envs.rewards.gap_drop``): the normalised all-level KD-gap drop over the shared
  update minus the same price (the first version's reward, kept for comparison).
"""

from envs.rewards import gap_drop, value  # noqa: F401  (register the rewards)
from envs.rewards.base import (
    ENV_PHASE,
    REWARDS,
    Credit,
    DecisionReward,
    RewardSetup,
    build_reward,
    leave_one_out_baseline,
    subset_flops_fractions,
)

__all__ = [
    "ENV_PHASE",
    "REWARDS",
    "Credit",
    "DecisionReward",
    "RewardSetup",
    "build_reward",
    "leave_one_out_baseline",
    "subset_flops_fractions",
]
