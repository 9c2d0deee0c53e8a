"""A tiny level-selection MultiAgentEnv with the real env's interface, for the policy tests.

Same agents ("slot_0".."slot_{B-1}"), spaces (Box observation, Discrete(16) action, bit i =
LEVELS[i]) and env_config keys as ``envs.level_selection_env.LevelSelectionEnv``, but the
"student" is a vector of per-level gaps: sample i's reward is the gap it closes on its chosen
levels minus λ times their FLOPs share, so the best subset is all levels at λ = 0 and none at a
large λ. Costs microseconds per step, so PPO on it fits in a unit test.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.tune.registry import register_env

from rlpkd.config import Config, config_to_dict
from rlpkd.levels import LEVELS, NUM_LEVELS

TOY_ENV_NAME = "rlpkd_toy_level_selection"
TOY_OBS_DIM = 6
"""Per-level gaps (4), training progress, a constant 1."""
TOY_FLOPS_SHARE = np.array([0.53, 0.27, 0.13, 0.07])
"""Share of all-level KD FLOPs of P2..P5 (P2 dearest, as in the real FLOPs model)."""
GAP_GAIN = 0.5
"""Reward per unit of gap closed on a chosen level."""


class ToyLevelSelectionEnv(MultiAgentEnv):
    """B sample slots; each step draws fresh per-level gaps in [0, 1) for every slot."""

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        env_config = dict(env_config or {})
        rl = env_config.get("config", {}).get("rl", {})
        self.slots = int(rl.get("slots", 4))
        self.episode_steps = int(rl.get("episode_steps", 4))
        self.lam = float(env_config.get("lam", rl.get("lam", 0.5)))
        self.possible_agents = [f"slot_{i}" for i in range(self.slots)]
        self.agents = list(self.possible_agents)
        obs_space = gym.spaces.Box(-np.inf, np.inf, (TOY_OBS_DIM,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, gym.spaces.Discrete(16))
        self._rng = np.random.default_rng(int(env_config.get("seed", 0)))
        self._gaps = np.zeros((self.slots, NUM_LEVELS))
        self._t = 0
        self.selection_counts = np.zeros(NUM_LEVELS, dtype=np.int64)
        self.decisions = 0

    def _observe(self) -> dict[str, np.ndarray]:
        self._gaps = self._rng.random((self.slots, NUM_LEVELS))
        progress = self._t / self.episode_steps
        return {
            agent: np.concatenate([self._gaps[i], [progress, 1.0]]).astype(np.float32)
            for i, agent in enumerate(self.agents)
        }

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode with fresh samples in every slot."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        return self._observe(), {agent: {} for agent in self.agents}

    def step(self, action_dict: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        """Score each slot's subset, then show the next batch of samples."""
        rewards, infos = {}, {}
        for i, agent in enumerate(self.agents):
            bits = (int(action_dict[agent]) >> np.arange(NUM_LEVELS)) & 1
            flops = float(TOY_FLOPS_SHARE @ bits)
            gap_closed = float(self._gaps[i] @ bits)
            rewards[agent] = GAP_GAIN * gap_closed - self.lam * flops
            infos[agent] = {"kd_gap": float(self._gaps[i].mean()), "kd_flops_fraction": flops}
            self.selection_counts += bits
            self.decisions += 1
        self._t += 1
        done = self._t >= self.episode_steps
        obs = self._observe()
        terminateds = {agent: done for agent in self.agents} | {"__all__": done}
        truncateds = {agent: False for agent in self.agents} | {"__all__": False}
        return obs, rewards, terminateds, truncateds, infos

    def metrics(self) -> dict[str, Any]:
        """Selection counts per level and the number of decisions so far."""
        return {
            "decisions": self.decisions,
            "selected": {
                level: int(c) for level, c in zip(LEVELS, self.selection_counts, strict=True)
            },
        }


def register_toy_env() -> str:
    """Register the toy env with RLlib/Tune; returns its name."""
    register_env(TOY_ENV_NAME, lambda env_config: ToyLevelSelectionEnv(env_config))
    return TOY_ENV_NAME


def toy_config(**rl_overrides: Any) -> Config:
    """A tiny Config whose rl section suits the toy env (small batches, fast learning)."""
    config = Config()
    rl = config.rl
    rl.slots, rl.episode_steps = 4, 4
    rl.train_batch_size, rl.minibatch_size, rl.num_epochs = 128, 64, 4
    rl.lr, rl.gamma, rl.entropy_coeff = 3e-3, 0.0, 0.0
    rl.hidden_sizes = [32]
    rl.num_env_runners, rl.num_learners = 0, 0
    for key, value in rl_overrides.items():
        setattr(rl, key, value)
    return config


def toy_env_config(config: Config, lam: float | None = None, seed: int = 0) -> dict[str, Any]:
    """env_config for the toy env, with the real env's keys."""
    env_config: dict[str, Any] = {
        "config": config_to_dict(config),
        "teacher_checkpoint": "",
        "snapshot_dir": "",
        "seed": seed,
    }
    if lam is not None:
        env_config["lam"] = lam
    return env_config
