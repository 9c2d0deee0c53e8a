"""The level-selection policy and how it is learnt (DESIGN §6).

- ``level_policy_module``: ``LevelSelectionModule``, the RLModule shared by every sample slot.
- ``ppo_setup``: the PPOConfig, the selection-metrics callback and the Phase-2 loop (``train_policy``).
- ``learning_log``: what Phase 2 records per iteration (TensorBoard ``policy/...``, policy_learning.json).
- ``weights``: weights into/out of an algorithm (learner and env runners) and weights files.
- ``reptile``: the MAML-style warm start (Reptile) and warm-vs-scratch adaptation curves.
- ``policy_selector``: ``PolicyLevels``, the frozen policy as a Phase-3 level selector.
"""

__all__ = [
    "level_policy_module",
    "ppo_setup",
    "learning_log",
    "weights",
    "reptile",
    "policy_selector",
]
