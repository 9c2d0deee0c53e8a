"""Per-sample pyramid-level selection as an RLlib multi-agent env (DESIGN §5).

One agent per sample slot of a distillation batch ("slot_0" .. "slot_{B-1}", all mapped to one
shared policy by the PPO side): each step, every slot sees its own sample's observation
(``envs.observation``), picks a subset of {P2, P3, P4, P5} (``Discrete(16)``, bit i = ``LEVELS[i]``),
the student makes one KD update on the batch with those per-sample masks, and each slot receives its
own reward (``envs.reward.sample_rewards``). An episode continues a snapshot of an all-level KD run
(``envs.snapshots``) for ``config.rl.episode_steps`` updates.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.observation import OBS_DIM, observations_from_features
from envs.reward import (
    normalised_gap_drop,
    reward_level_scale,
    sample_rewards,
    subset_flops_fractions,
)
from envs.snapshots import StudentTrainingState, build_snapshot_pool, load_snapshot
from rlpkd.config import config_from_dict
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import build_datasets
from rlpkd.data.coco import collate_detection
from rlpkd.errors import DivergenceError
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import LEVELS, NUM_LEVELS, NUM_SUBSETS, subsets_to_masks
from rlpkd.models.detector import DetectorOutput
from rlpkd.runtime import resolve_device
from rlpkd.training.kd_step import (
    detached_features,
    first_non_finite,
    kd_losses_no_grad,
    kd_training_step,
    student_forward,
)
from rlpkd.training.teacher_phase import load_teacher

__all__ = ["ENV_PHASE", "slot_ids", "LevelSelectionEnv"]

ENV_PHASE = "the policy-learning env"
"""How the env's student updates are named in a DivergenceError."""


def slot_ids(slots: int) -> list[str]:
    """Agent ids of the B sample slots: ``slot_0`` .. ``slot_{B-1}``."""
    return [f"slot_{i}" for i in range(slots)]


class LevelSelectionEnv(MultiAgentEnv):
    """B sample slots choose their KD levels; one student update per step; a reward per sample.

    ``env_config`` keys: ``config`` (plain dict of the resolved Config), ``teacher_checkpoint``
    (a teacher.pt with ``{"model": state_dict}``), ``snapshot_dir`` (where the snapshot pool is
    built or reused), ``seed`` (int) and optionally ``lam`` (overrides ``config.rl.lam``).

    Counters for logging (cumulative since construction or ``reset_metrics``) are attributes;
    ``metrics()`` summarises them.
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
        observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        # actions: every subset of P2..P5, encoded by ``rlpkd.levels.subset_to_index``
        action_space = gym.spaces.Discrete(NUM_SUBSETS)
        self.observation_spaces = {agent: observation_space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}

        self.device = resolve_device(self.config.runtime.device)
        self.datasets = build_datasets(self.config.data, progress=False)
        teacher, _ = load_teacher(
            Path(env_config["teacher_checkpoint"]), self.config, self.datasets.num_classes
        )
        self.teacher = teacher.to(self.device)
        self.snapshot_dir = Path(env_config["snapshot_dir"])
        self.snapshots: list[Path] | None = None  # built or found at the first reset
        flops = flops_model_from_config(self.config, self.datasets.num_classes)
        self.fraction_table = flops.subset_kd_fractions()
        self.all_levels_gflops = flops.kd_gflops(LEVELS)
        # one no-grad gap evaluation per sample: the teacher at all levels + the KD loss (counted
        # with its backward, a slight overestimate) + a student forward (~1/3 of its train step)
        self.gap_eval_gflops_per_sample = self.all_levels_gflops + flops.student_train_gflops() / 3

        # parallel env runners get different streams from one base seed
        self._rng = np.random.default_rng(
            [
                int(env_config.get("seed", 0)),
                int(getattr(env_config, "worker_index", 0)),
                int(getattr(env_config, "vector_index", 0)),
            ]
        )
        self.state: StudentTrainingState | None = None
        # what ``_observations`` measured of the batch the next step trains on
        self._gap_before: torch.Tensor | None = None
        self._output: DetectorOutput | None = None
        self.batch: DetectionBatch | None = None
        self.episode_step = 0
        self.episode_gflops = 0.0
        self.reset_metrics()

    # ----------------------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode from a random snapshot and return every slot's first observation."""
        super().reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.snapshots is None:
            self.snapshots = build_snapshot_pool(
                self.config, self.datasets, self.teacher, self.snapshot_dir
            )
        path = self.snapshots[int(self._rng.integers(len(self.snapshots)))]
        self.state = load_snapshot(path, self.config, self.datasets.num_classes, self.device)
        self.episode_step = 0
        self.episode_gflops = 0.0
        self.batch = self._next_batch()
        infos = {agent: {"start_progress": self.state.progress} for agent in self.agents}
        return self._observations(), infos

    def step(self, action_dict: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """One student update with every slot's chosen levels; a reward per slot.

        Raises:
            DivergenceError: the update's loss or gradient, or a slot's reward, is not finite
                (the phase is ``ENV_PHASE``, the step the snapshot's student step).
        """
        if self.state is None or self.batch is None or self._gap_before is None:
            raise RuntimeError(
                "LevelSelectionEnv.step called before reset or after the episode ended"
            )
        missing = [agent for agent in self.agents if agent not in action_dict]
        if missing:
            raise ValueError(f"no action for slot(s) {missing}; every slot acts on every step")
        actions = torch.tensor([int(action_dict[agent]) for agent in self.agents])
        masks = subsets_to_masks(actions)
        state, batch, amp = self.state, self.batch, self.config.runtime.amp
        all_levels = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool)

        start = measured = time.perf_counter()
        # measured before the step's own forward, when the batch was shown (``_observations``)
        gap_before, output = self._gap_before, self._output
        scale = state.objective.scale
        level_scale = reward_level_scale(scale.scale, scale.initialised, gap_before)
        terms = kd_training_step(
            state.student,
            self.teacher,
            state.objective,
            state.optimizer,
            batch,
            masks,
            self.config.student_schedule.grad_clip,
            amp,
            phase=ENV_PHASE,
            step=state.step + 1,
            output=output,
        )
        state.scheduler.step()
        state.step += 1
        updated = time.perf_counter()
        gap_after = kd_losses_no_grad(
            state.student, self.teacher, state.objective, batch, all_levels, amp
        )
        self.gap_eval_time_s += time.perf_counter() - updated
        self.update_time_s += updated - measured

        fractions = subset_flops_fractions(masks, self.fraction_table)
        rewards = sample_rewards(gap_before, gap_after, level_scale, masks, fractions, self.lam)
        _raise_if_reward_diverged(rewards, gap_before, gap_after, level_scale, state.step)
        drops = normalised_gap_drop(gap_before, gap_after, level_scale)
        # the observation's running gap sees only what Phase 3 sees: the distilled entries
        state.running_gap.update(terms.kd_raw, masks)
        self._count(masks, fractions, rewards, drops, gap_before, level_scale)
        self.episode_step += 1

        done = self.episode_step >= self.episode_steps
        self.batch = self._next_batch()
        observations = self._observations(final=done)
        self.step_time_s += time.perf_counter() - start
        reward_dict = {agent: float(r) for agent, r in zip(self.agents, rewards, strict=True)}
        infos = {
            agent: {
                "kd_gap_drop": float(drops[i]),
                "flops_fraction": float(fractions[i]),
                "num_levels": int(masks[i].sum()),
            }
            for i, agent in enumerate(self.agents)
        }
        terminateds = {agent: done for agent in self.agents} | {"__all__": done}
        truncateds = {agent: False for agent in self.agents} | {"__all__": False}
        return observations, reward_dict, terminateds, truncateds, infos

    # ------------------------------------------------------------------------------- metrics
    def reset_metrics(self) -> None:
        """Zero the logging counters."""
        self.level_counts = np.zeros(NUM_LEVELS, dtype=np.int64)  # decisions selecting P2..P5
        self.num_decisions = 0
        self.num_updates = 0
        self.reward_sum = 0.0
        self.kd_gap_sum = 0.0  # normalised all-level gap before the update, summed over levels
        self.kd_gap_level_sum = np.zeros(NUM_LEVELS)  # raw gap before the update, per level
        self.kd_gap_drop_sum = 0.0
        self.kd_gflops_sum = 0.0  # KD GFLOPs of the chosen subsets (what Phase 3 would spend)
        self.kd_flops_fraction_sum = 0.0
        # the extra cost of learning: two all-level no-grad gap evaluations per step
        self.gap_eval_gflops = 0.0  # estimated, see __init__
        self.gap_eval_time_s = 0.0
        self.update_time_s = 0.0  # the student updates themselves
        self.observation_time_s = 0.0  # no-grad student pyramid forwards for the observations
        self.step_time_s = 0.0  # whole env steps (gap evaluations, update, next observations)

    def metrics(self) -> dict[str, float]:
        """Per-decision means of the counters, plus the extra learning cost totals."""
        decisions = max(self.num_decisions, 1)
        result = {
            f"selection_rate_{level}": float(self.level_counts[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        result |= {
            f"mean_kd_gap_{level}": float(self.kd_gap_level_sum[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        return result | {
            "mean_levels_per_decision": float(self.level_counts.sum()) / decisions,
            "mean_reward": self.reward_sum / decisions,
            "mean_kd_gap": self.kd_gap_sum / decisions,
            "mean_kd_gap_drop": self.kd_gap_drop_sum / decisions,
            "kd_gflops_per_decision": self.kd_gflops_sum / decisions,
            "kd_flops_fraction_per_decision": self.kd_flops_fraction_sum / decisions,
            "gap_eval_gflops": self.gap_eval_gflops,
            "gap_eval_gflops_per_decision": self.gap_eval_gflops / decisions,
            "gap_eval_time_s": self.gap_eval_time_s,
            "update_time_s": self.update_time_s,
            "observation_time_s": self.observation_time_s,
            "step_time_s": self.step_time_s,
            "decisions": float(self.num_decisions),
            "updates": float(self.num_updates),
        }

    # ------------------------------------------------------------------------------- helpers
    def _next_batch(self) -> DetectionBatch:
        """B training samples drawn without replacement (with replacement across batches)."""
        train = self.datasets.train
        indices = self._rng.choice(
            len(train), size=self.num_slots, replace=len(train) < self.num_slots
        )
        # The random flips draw from torch's global RNG, which RLlib draws from too: seed them
        # from this env's own stream, so that a run repeats bit for bit.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._rng.integers(2**63 - 1)))
            samples = [train[int(i)] for i in indices]
        return collate_detection(samples).to(self.device)

    def _budget_left(self) -> float:
        """Fraction of the per-episode KD GFLOPs budget not yet spent; 0 without a budget."""
        budget = self.config.rl.flops_budget
        return max(0.0, 1.0 - self.episode_gflops / budget) if budget > 0 else 0.0

    def _observations(self, final: bool = False) -> dict[str, np.ndarray]:
        """Every slot's observation of ``self.batch``, from the student's training-mode forward
        of it that the next ``step`` trains with (as Phase 3 observes the step's own forward).

        First the batch's all-level KD gap is measured (eval mode, before that forward updates
        BatchNorm's running statistics), then the forward runs with gradients and is kept for
        the step; after an episode's last step (``final``) no step follows, so there is no gap
        to measure and the forward runs without gradients, only to show the observation.
        """
        state, batch, amp = self.state, self.batch, self.config.runtime.amp
        self._gap_before, self._output = None, None
        start = time.perf_counter()
        if not final:  # no step trains on the batch shown after an episode's last step
            all_levels = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool)
            self._gap_before = kd_losses_no_grad(
                state.student, self.teacher, state.objective, batch, all_levels, amp
            )
        measured = time.perf_counter()
        self.gap_eval_time_s += measured - start
        with torch.set_grad_enabled(not final):
            output = student_forward(state.student, batch, amp)
        rows = observations_from_features(
            detached_features(output),
            batch,
            state.running_gap.scale,
            state.progress,
            self._budget_left(),
            self.config.data.level_thresholds,
        )
        if not final:
            self._output = output
        self.observation_time_s += time.perf_counter() - measured
        return {agent: rows[i] for i, agent in enumerate(self.agents)}

    def _count(
        self,
        masks: torch.Tensor,
        fractions: torch.Tensor,
        rewards: torch.Tensor,
        drops: torch.Tensor,
        gap_before: torch.Tensor,
        level_scale: torch.Tensor,
    ) -> None:
        chosen_gflops = float(fractions.sum()) * self.all_levels_gflops
        self.episode_gflops += chosen_gflops
        self.level_counts += masks.sum(dim=0).numpy()
        self.num_decisions += len(masks)
        self.num_updates += 1
        self.reward_sum += float(rewards.sum())
        gap = gap_before.float().cpu()
        self.kd_gap_sum += float((gap / level_scale.clamp_min(1e-12)).sum())
        self.kd_gap_level_sum += gap.sum(dim=0).numpy()
        self.kd_gap_drop_sum += float(drops.sum())
        self.kd_gflops_sum += chosen_gflops
        self.kd_flops_fraction_sum += float(fractions.sum())
        self.gap_eval_gflops += 2 * len(masks) * self.gap_eval_gflops_per_sample


def _raise_if_reward_diverged(
    rewards: torch.Tensor,
    gap_before: torch.Tensor,
    gap_after: torch.Tensor,
    level_scale: torch.Tensor,
    step: int,
) -> None:
    """DivergenceError unless every reward is finite, naming what made it non-finite: the KD gap
    at a level before or after the update, the reward's level scale, else the reward itself."""
    if bool(torch.isfinite(rewards).all()):
        return
    named: list[tuple[str, torch.Tensor]] = []
    for i, level in enumerate(LEVELS):
        named += [
            (f"reward: kd_gap_before_{level}", gap_before[:, i]),
            (f"reward: kd_gap_after_{level}", gap_after[:, i]),
            (f"reward: level_scale_{level}", level_scale[i]),
        ]
    named.append(("reward", rewards))
    term, value = first_non_finite(named) or ("reward", float("nan"))
    raise DivergenceError(ENV_PHASE, step, term, value)
