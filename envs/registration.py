"""The names RLlib and Tune build the level-selection decision processes by, and their
registration."""

from __future__ import annotations

from ray.tune.registry import register_env

from envs.bank_bandit_env import BankBanditEnv
from envs.level_selection_env import LevelSelectionEnv

__all__ = ["ENV_NAME", "BANK_ENV_NAME", "register_envs"]

ENV_NAME = "rlpkd_level_selection"
"""The name ``LevelSelectionEnv`` (the live env) is registered under."""
BANK_ENV_NAME = "rlpkd_decision_bank"
"""The name ``BankBanditEnv`` (PPO over the decision bank) is registered under."""


def register_envs() -> None:
    """Register ``LevelSelectionEnv`` as ``ENV_NAME`` and ``BankBanditEnv`` as
    ``BANK_ENV_NAME`` (safe to call more than once)."""
    register_env(ENV_NAME, lambda env_config: LevelSelectionEnv(env_config))
    register_env(BANK_ENV_NAME, lambda env_config: BankBanditEnv(env_config))
