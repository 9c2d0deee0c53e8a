"""Gymnasium/RLlib environments for per-sample pyramid-level selection (DESIGN §5).

``register_envs()`` registers ``LevelSelectionEnv`` with Ray Tune under ``ENV_NAME`` so that RLlib
and Tune build it by name from an ``env_config`` (see ``docs/decision_process.md``).
"""

from __future__ import annotations

__all__ = ["ENV_NAME", "register_envs"]

ENV_NAME = "rlpkd_level_selection"
"""The name ``LevelSelectionEnv`` is registered under."""


def register_envs() -> None:
    """Register ``LevelSelectionEnv`` as ``ENV_NAME`` (safe to call more than once)."""
    from ray.tune.registry import register_env

    from envs.level_selection_env import LevelSelectionEnv

    register_env(ENV_NAME, lambda env_config: LevelSelectionEnv(env_config))
