"""The name RLlib and Tune build the level-selection decision process by, and its registration."""

from __future__ import annotations

from ray.tune.registry import register_env

from envs.level_selection_env import LevelSelectionEnv

__all__ = ["ENV_NAME", "register_envs"]

ENV_NAME = "rlpkd_level_selection"
"""The name ``LevelSelectionEnv`` is registered under."""


def register_envs() -> None:
    """Register ``LevelSelectionEnv`` as ``ENV_NAME`` (safe to call more than once)."""
    register_env(ENV_NAME, lambda env_config: LevelSelectionEnv(env_config))
