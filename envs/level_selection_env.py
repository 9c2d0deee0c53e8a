"""Per-sample pyramid-level selection as an RLlib multi-agent env (DESIGN §5).

One agent per sample slot of a distillation batch ("slot_0" .. "slot_{B-1}", all mapped to one
shared policy by the PPO side): each step, every slot sees its own sample's observation
(``envs.observation``), picks a subset of {P2, P3, P4, P5} (``Discrete(16)``, bit i = ``LEVELS[i]``),
the student makes one KD update on the batch with those per-sample masks, and each slot receives its
own reward from the reward object ``rl.reward`` names (``envs.rewards``: ``value`` or
``gap_drop``). An env episode continues a snapshot of an all-level KD run (``envs.snapshots``) for
``config.rl.episode_steps`` updates and is then *truncated*: every decision is a contextual bandit
(γ = ``rl.gamma`` = 0 by default), see docs/decision_process.md.

After each step ``last_step`` holds what the decisions saw and, with a full-information reward,
the values of every level: the contexts the decision bank (``envs.decision_bank``) keeps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.observation import observation_dim, observations_from_features
from envs.rewards import (
    ENV_PHASE,
    RewardSetup,
    build_reward,
    leave_one_out_baseline,
    subset_flops_fractions,
)
from envs.rewards.gap_drop import reward_level_scale
from envs.snapshots import StudentTrainingState, build_snapshot_pool, load_snapshot
from rlpkd.config import config_from_dict
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import build_datasets
from rlpkd.data.coco import collate_detection
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import LEVELS, NUM_LEVELS, NUM_SUBSETS, subsets_to_masks
from rlpkd.models.detector import DetectorOutput
from rlpkd.runtime import resolve_device
from rlpkd.training.kd_step import detached_features, kd_training_step, student_forward
from rlpkd.training.teacher_phase import load_teacher

__all__ = ["ENV_PHASE", "slot_ids", "StepRecord", "LevelSelectionEnv"]


def slot_ids(slots: int) -> list[str]:
    """Agent ids of the B sample slots: ``slot_0`` .. ``slot_{B-1}``."""
    return [f"slot_{i}" for i in range(slots)]


@dataclass
class StepRecord:
    """What the B decisions of one env step saw and what they were worth."""

    observations: np.ndarray
    """[B, obs_dim] float32: each decision's observation."""
    image_ids: np.ndarray
    """[B] int64: the image each decision was about."""
    progress: float
    """Student training progress when the decisions were taken."""
    update: int
    """The env's update counter (0-based) of this step."""
    level_values: np.ndarray | None
    """[B, 4] raw values of every level (full-information rewards), else None."""


class LevelSelectionEnv(MultiAgentEnv):
    """B sample slots choose their KD levels; one student update per step; a reward per sample.

    ``env_config`` keys: ``config`` (plain dict of the resolved Config), ``teacher_checkpoint``
    (a teacher.pt with ``{"model": state_dict}``), ``snapshot_dir`` (where the snapshot pool is
    built or reused), ``seed`` (int), optionally ``lam`` (overrides ``config.rl.lam``),
    ``reward`` (overrides ``config.rl.reward``), ``value_unit`` (a fixed unit of the value
    reward, e.g. the decision bank's; default a running one) and ``exclude_images`` (image ids
    the env never trains on, e.g. the decision bank's held-out ones).

    The reward object (``self.reward``) decides which training images the env draws from
    (``self.train_set``; the value reward holds its V out) and owns its signal's counters;
    the env's own counters (cumulative since construction or ``reset_metrics``) are attributes and
    ``metrics()`` merges both.
    """

    def __init__(self, env_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config_from_dict(dict(env_config["config"]), "env_config['config']")
        rl = self.config.rl
        self.lam = float(env_config.get("lam", rl.lam))
        self.num_slots = rl.slots
        self.episode_steps = rl.episode_steps
        self.possible_agents = slot_ids(rl.slots)
        self.agents = list(self.possible_agents)

        self.device = resolve_device(self.config.runtime.device)
        self.datasets = build_datasets(self.config.data, progress=False)
        self.num_classes = self.datasets.num_classes
        obs_dim = observation_dim(self.num_classes)
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        # actions: every subset of P2..P5, encoded by ``rlpkd.levels.subset_to_index``
        action_space = gym.spaces.Discrete(NUM_SUBSETS)
        self.observation_spaces = {agent: observation_space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}
        teacher, _ = load_teacher(
            Path(env_config["teacher_checkpoint"]), self.config, self.datasets.num_classes
        )
        self.teacher = teacher.to(self.device)
        flops = flops_model_from_config(self.config, self.datasets.num_classes)
        self.fraction_table = flops.subset_kd_fractions()
        self.all_levels_gflops = flops.kd_gflops(LEVELS)
        unit = env_config.get("value_unit")
        self.reward = build_reward(
            str(env_config.get("reward", rl.reward)),
            RewardSetup(
                self.config,
                self.datasets,
                self.teacher,
                flops,
                self.device,
                self.lam,
                None if unit is None else float(unit),
            ),
        )
        self.train_set = self.reward.train_set
        excluded = {int(i) for i in env_config.get("exclude_images", ())}
        if excluded:  # e.g. the decision bank's held-out and validation images
            keep = [i for i, image in enumerate(self.train_set.image_ids) if image not in excluded]
            self.train_set = self.train_set.subset(keep, train=True)
        self.heldout: DetectionBatch | None = getattr(self.reward, "heldout", None)
        self.snapshot_dir = Path(env_config["snapshot_dir"])
        self.snapshots: list[Path] | None = None  # built or found at the first reset

        # parallel env runners get different streams from one base seed
        self._rng = np.random.default_rng(
            [
                int(env_config.get("seed", 0)),
                int(getattr(env_config, "worker_index", 0)),
                int(getattr(env_config, "vector_index", 0)),
            ]
        )
        self.state: StudentTrainingState | None = None
        self._output: DetectorOutput | None = None  # the forward the next step trains with
        self._rows: np.ndarray | None = None  # the observations shown for ``self.batch``
        self.batch: DetectionBatch | None = None
        self.episode_step = 0
        self.last_step: StepRecord | None = None
        self.reset_metrics()

    # ----------------------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode from a snapshot and return every slot's first observation: a random
        one, or ``options["snapshot_index"]`` (modulo the pool's size) when given."""
        super().reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.snapshots is None:
            self.snapshots = build_snapshot_pool(
                self.config, self.datasets, self.teacher, self.snapshot_dir
            )
        index = (options or {}).get("snapshot_index")
        if index is None:
            index = int(self._rng.integers(len(self.snapshots)))
        path = self.snapshots[int(index) % len(self.snapshots)]
        self.state = load_snapshot(path, self.config, self.datasets.num_classes, self.device)
        self.episode_step = 0
        self.batch = self._next_batch()
        infos = {agent: {"start_progress": self.state.progress} for agent in self.agents}
        return self._observations(), infos

    def step(self, action_dict: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """One student update with every slot's chosen levels; a reward per slot.

        The episode is truncated (never terminated) after ``rl.episode_steps`` updates: the
        student's run goes on, this env only stops following it.

        Raises:
            DivergenceError: the reward's signal, the update's loss or gradient, or a slot's
                reward is not finite (the phase is ``ENV_PHASE``, the step the snapshot's
                student step).
        """
        if self.state is None or self.batch is None or self._output is None:
            raise RuntimeError(
                "LevelSelectionEnv.step called before reset or after the episode ended"
            )
        missing = [agent for agent in self.agents if agent not in action_dict]
        if missing:
            raise ValueError(f"no action for slot(s) {missing}; every slot acts on every step")
        actions = torch.tensor([int(action_dict[agent]) for agent in self.agents])
        masks = subsets_to_masks(actions)
        state, batch = self.state, self.batch
        fractions = subset_flops_fractions(masks, self.fraction_table)
        progress = state.progress

        start = time.perf_counter()
        gap_before = self.reward.before_update(state, batch, state.step + 1)
        scale = state.objective.scale
        level_scale = reward_level_scale(scale.scale, scale.initialised, gap_before)
        terms = self._update(masks)
        credit = self.reward.credit(state, batch, masks, fractions, level_scale, state.step)
        rewards = credit.rewards
        # the observation's running gap sees only what Phase 3 sees: the distilled entries
        state.running_gap.update(terms.kd_raw, masks)
        self._count(masks, fractions, rewards, gap_before, level_scale)
        self.last_step = StepRecord(
            observations=self._rows,
            image_ids=batch.image_ids.cpu().numpy().astype(np.int64),
            progress=progress,
            update=self.num_updates - 1,
            level_values=None if credit.level_values is None else credit.level_values.numpy(),
        )
        self.episode_step += 1

        done = self.episode_step >= self.episode_steps
        self.batch = self._next_batch()
        observations = self._observations(final=done)
        self.step_time_s += time.perf_counter() - start
        if self.config.rl.reward_baseline == "leave_one_out":
            rewards = leave_one_out_baseline(rewards)  # the metrics above keep the raw reward
        reward_dict = {agent: float(r) for agent, r in zip(self.agents, rewards, strict=True)}
        infos = {
            agent: credit.infos[i]
            | {"flops_fraction": float(fractions[i]), "num_levels": int(masks[i].sum())}
            for i, agent in enumerate(self.agents)
        }
        # a contextual bandit segment of a run that goes on: truncated, never terminated
        terminateds = {agent: False for agent in self.agents} | {"__all__": False}
        truncateds = {agent: done for agent in self.agents} | {"__all__": done}
        return observations, reward_dict, terminateds, truncateds, infos

    # ------------------------------------------------------------------------------- metrics
    def reset_metrics(self) -> None:
        """Zero the logging counters (the env's and the reward's)."""
        self.level_counts = np.zeros(NUM_LEVELS, dtype=np.int64)  # decisions selecting P2..P5
        self.num_decisions = 0
        self.num_updates = 0
        self.reward_sum = 0.0
        self.kd_gap_sum = 0.0  # normalised all-level gap before the update, summed over levels
        self.kd_gap_level_sum = np.zeros(NUM_LEVELS)  # raw gap before the update, per level
        self.kd_gflops_sum = 0.0  # KD GFLOPs of the chosen subsets (what Phase 3 would spend)
        self.kd_flops_fraction_sum = 0.0
        self.update_time_s = 0.0  # the student updates themselves
        self.observation_time_s = 0.0  # student pyramid forwards for the observations
        self.step_time_s = 0.0  # whole env steps (reward signal, update, next observations)
        self.reward.reset_metrics()

    def metrics(self) -> dict[str, float]:
        """Per-decision means of the env's counters and the reward's own ``metrics`` (its
        signal's statistics and extra cost, ``reward_signal_*``)."""
        decisions = max(self.num_decisions, 1)
        result = {
            f"selection_rate_{level}": float(self.level_counts[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        result |= {
            f"mean_kd_gap_{level}": float(self.kd_gap_level_sum[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        return (
            result
            | {
                "mean_levels_per_decision": float(self.level_counts.sum()) / decisions,
                "mean_reward": self.reward_sum / decisions,
                "mean_kd_gap": self.kd_gap_sum / decisions,
                "kd_gflops_per_decision": self.kd_gflops_sum / decisions,
                "kd_flops_fraction_per_decision": self.kd_flops_fraction_sum / decisions,
                "update_time_s": self.update_time_s,
                "observation_time_s": self.observation_time_s,
                "step_time_s": self.step_time_s,
                "step_time_s_per_decision": self.step_time_s / decisions,
                "decisions": float(self.num_decisions),
                "updates": float(self.num_updates),
            }
            | self.reward.metrics(self.num_decisions, self.num_updates)
        )

    # ------------------------------------------------------------------------------- helpers
    def _next_batch(self) -> DetectionBatch:
        """B training samples drawn without replacement (with replacement across batches), from
        ``self.train_set`` (without V under the value reward)."""
        train = self.train_set
        indices = self._rng.choice(
            len(train), size=self.num_slots, replace=len(train) < self.num_slots
        )
        # The random flips draw from torch's global RNG, which RLlib draws from too: seed them
        # from this env's own stream, so that a run repeats bit for bit.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._rng.integers(2**63 - 1)))
            samples = [train[int(i)] for i in indices]
        return collate_detection(samples).to(self.device)

    def _update(self, masks: torch.Tensor) -> Any:
        """The student's KD update on ``self.batch`` with ``masks``, reusing the forward kept by
        ``_observations``; returns the step's loss terms."""
        state = self.state
        start = time.perf_counter()
        terms = kd_training_step(
            state.student,
            self.teacher,
            state.objective,
            state.optimizer,
            self.batch,
            masks,
            self.config.student_schedule.grad_clip,
            self.config.runtime.amp,
            phase=ENV_PHASE,
            step=state.step + 1,
            output=self._output,
        )
        state.scheduler.step()
        state.step += 1
        self.update_time_s += time.perf_counter() - start
        return terms

    def _observations(self, final: bool = False) -> dict[str, np.ndarray]:
        """Every slot's observation of ``self.batch``, from the student's training-mode forward
        of it that the next ``step`` trains with (as Phase 3 observes the step's own forward).

        First the reward ``observe``s the batch (gap_drop measures its all-level KD gap, in eval
        mode, before that forward updates BatchNorm's running statistics). Then the forward runs
        with gradients and is kept for the step; after an episode's last step (``final``) no step
        follows, so nothing is measured and the forward runs without gradients, only to show the
        observation.
        """
        state, batch, amp = self.state, self.batch, self.config.runtime.amp
        self._output = None
        if not final:  # no step trains on the batch shown after an episode's last step
            self.reward.observe(state, batch)
        start = time.perf_counter()
        with torch.set_grad_enabled(not final):
            output = student_forward(state.student, batch, amp)
        rows = observations_from_features(
            detached_features(output),
            batch,
            state.running_gap.scale,
            state.progress,
            self.config.data.level_thresholds,
            self.num_classes,
        )
        if not final:
            self._output = output
        self._rows = np.asarray(rows, dtype=np.float32)
        self.observation_time_s += time.perf_counter() - start
        return {agent: self._rows[i] for i, agent in enumerate(self.agents)}

    def _count(
        self,
        masks: torch.Tensor,
        fractions: torch.Tensor,
        rewards: torch.Tensor,
        gap_before: torch.Tensor,
        level_scale: torch.Tensor,
    ) -> None:
        chosen_gflops = float(fractions.sum()) * self.all_levels_gflops
        self.level_counts += masks.sum(dim=0).numpy()
        self.num_decisions += len(masks)
        self.num_updates += 1
        self.reward_sum += float(rewards.sum())
        gap = gap_before.float().cpu()
        self.kd_gap_sum += float((gap / level_scale.clamp_min(1e-12)).sum())
        self.kd_gap_level_sum += gap.sum(dim=0).numpy()
        self.kd_gflops_sum += chosen_gflops
        self.kd_flops_fraction_sum += float(fractions.sum())
