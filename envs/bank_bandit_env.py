"""The decision bank as a bandit env PPO learns from (DESIGN §5, full information).

Each step serves B banked contexts to B slots ("slot_0" .. "slot_{B-1}", one shared policy, as in
the live env) and pays each slot the exact reward of the subset it chose in that context, read off
the bank's reward table (``DecisionBank.reward_table``): what the live env would have paid for
that decision, at the cost of a lookup. The reward is in one fixed unit (``value_unit``, the
bank's ``s``), so the return means the same from the first PPO iteration to the last.

The slot is paid the reward *above a uniformly random choice in the same context*
(``r(a) − mean_a' r(a')``): an action-independent baseline, computed exactly from the values of
all 16 subsets, which removes how good the context is as a whole (the critic cannot see that part)
without changing which subset is best or biasing the policy gradient. A return of 0 is a random
policy; the oracle earns ``mean_c (max_a r − mean_a r)``.

Episodes are ``episode_steps`` steps of independent contexts, truncated (γ = 0: each decision is a
contextual bandit).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.decision_bank import SUBSET_LEVELS, DecisionBank
from rlpkd.levels import LEVELS, NUM_LEVELS, NUM_SUBSETS

__all__ = ["BANK_SLOTS", "BANK_EPISODE_STEPS", "BankBanditEnv"]

BANK_SLOTS = 64
"""Contexts served per step (agents per step of the multi-agent episode)."""
BANK_EPISODE_STEPS = 16
"""Steps per (truncated) episode."""


class BankBanditEnv(MultiAgentEnv):
    """B slots act on banked contexts; each is paid its chosen subset's exact reward above random.

    ``env_config`` keys: ``bank_file`` (a ``DecisionBank`` ``.npz``), ``heldout_images`` (ids
    of the images whose contexts are held out: never served), ``lam`` (the FLOPs price),
    ``value_unit`` (``s``), ``seed``, optionally ``slots`` (default ``BANK_SLOTS``) and
    ``episode_steps`` (default ``BANK_EPISODE_STEPS``).
    """

    def __init__(self, env_config: Mapping[str, Any]) -> None:
        super().__init__()
        bank = DecisionBank.load(Path(env_config["bank_file"]))
        held = np.isin(bank.image_ids, np.asarray(env_config.get("heldout_images", []), np.int64))
        bank = bank.select(~held)
        if len(bank) == 0:
            raise ValueError(
                f"{env_config['bank_file']} holds no context outside the held-out images"
            )
        self.image_ids = bank.image_ids
        self.lam = float(env_config["lam"])
        self.value_unit = float(env_config["value_unit"])
        self.observations = bank.observations
        self._bank = bank
        self.subset_costs = bank.subset_costs
        self.set_lam(self.lam)
        self.num_slots = int(env_config.get("slots", BANK_SLOTS))
        self.episode_steps = int(env_config.get("episode_steps", BANK_EPISODE_STEPS))
        self.possible_agents = list(range(self.num_slots))
        self.agents = list(self.possible_agents)
        space = gym.spaces.Box(-np.inf, np.inf, (bank.observations.shape[1],), np.float32)
        self.observation_spaces = {agent: space for agent in self.agents}
        self.action_spaces = {agent: gym.spaces.Discrete(NUM_SUBSETS) for agent in self.agents}
        self._rng = np.random.default_rng(
            [
                int(env_config.get("seed", 0)),
                int(getattr(env_config, "worker_index", 0)),
                int(getattr(env_config, "vector_index", 0)),
            ]
        )
        self._served = np.zeros(self.num_slots, dtype=np.int64)
        self.episode_step = 0
        self.reset_metrics()

    def set_lam(self, lam: float) -> None:
        """Price the subsets at ``lam`` from now on (a budget's dual variable moves it)."""
        self.lam = float(lam)
        table = self._bank.reward_table(self.lam, self.value_unit)
        self.rewards_above_random = table - table.mean(axis=1, keepdims=True)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Serve the first B contexts of an episode."""
        super().reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.episode_step = 0
        return self._serve(), {}

    def step(self, action_dict: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Pay every slot its chosen subset's reward above random; serve the next contexts."""
        missing = [agent for agent in self.agents if agent not in action_dict]
        if missing:
            raise ValueError(f"no action for slot(s) {missing}; every slot acts on every step")
        actions = np.array([int(action_dict[agent]) for agent in self.agents])
        rewards = self.rewards_above_random[self._served, actions]
        self._count(actions, rewards)
        infos = {
            agent: {
                "flops_fraction": float(self.subset_costs[actions[i]]),
                "num_levels": int(SUBSET_LEVELS[actions[i]].sum()),
            }
            for i, agent in enumerate(self.agents)
        }
        self.episode_step += 1
        done = self.episode_step >= self.episode_steps
        observations = self._serve()
        reward_dict = {agent: float(r) for agent, r in zip(self.agents, rewards, strict=True)}
        terminateds = {agent: False for agent in self.agents} | {"__all__": False}
        truncateds = {agent: done for agent in self.agents} | {"__all__": done}
        return observations, reward_dict, terminateds, truncateds, infos

    def reset_metrics(self) -> None:
        """Zero the counters."""
        self.num_decisions = 0
        self.reward_sum = 0.0
        self.level_counts = np.zeros(NUM_LEVELS, dtype=np.int64)
        self.flops_fraction_sum = 0.0

    def metrics(self) -> dict[str, float]:
        """Per-decision means since the env was made: reward above random, selection rates and
        the FLOPs fraction of the chosen subsets."""
        decisions = max(self.num_decisions, 1)
        return {
            f"selection_rate_{level}": float(self.level_counts[i]) / decisions
            for i, level in enumerate(LEVELS)
        } | {
            "mean_reward_above_random": self.reward_sum / decisions,
            "kd_flops_fraction_per_decision": self.flops_fraction_sum / decisions,
            "decisions": float(self.num_decisions),
            "bank_contexts": float(len(self.observations)),
        }

    def _serve(self) -> dict[str, np.ndarray]:
        self._served = self._rng.integers(len(self.observations), size=self.num_slots)
        return {
            agent: self.observations[i] for agent, i in zip(self.agents, self._served, strict=True)
        }

    def _count(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.num_decisions += len(actions)
        self.reward_sum += float(rewards.sum())
        self.level_counts += SUBSET_LEVELS[actions].sum(axis=0).astype(np.int64)
        self.flops_fraction_sum += float(self.subset_costs[actions].sum())
