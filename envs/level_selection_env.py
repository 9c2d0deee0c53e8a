"""Per-sample pyramid-level selection as an RLlib multi-agent env (DESIGN §5).

One agent per sample slot of a distillation batch ("slot_0" .. "slot_{B-1}", all mapped to one
shared policy by the PPO side): each step, every slot sees its own sample's observation
(``envs.observation``), picks a subset of {P2, P3, P4, P5} (``Discrete(16)``, bit i = ``LEVELS[i]``),
the student makes one KD update on the batch with those per-sample masks, and each slot receives its
own reward (``config.rl.reward``: ``value`` = ``envs.reward.value_rewards`` from the value signal
``rlpkd.distill.level_value.level_values`` on a fixed held-out batch, ``gap_drop`` =
``envs.reward.sample_rewards``). An env episode continues a snapshot of an all-level KD run
(``envs.snapshots``) for ``config.rl.episode_steps`` updates and is then *truncated*: every decision
is a contextual bandit (γ = ``rl.gamma`` = 0 by default), see docs/decision_process.md.
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
from torch.utils.flop_counter import FlopCounterMode

from envs.observation import observation_dim, observations_from_features
from envs.reward import (
    RunningValueScale,
    leave_one_out_baseline,
    normalised_gap_drop,
    reward_level_scale,
    sample_rewards,
    subset_flops_fractions,
    value_rewards,
)
from envs.snapshots import StudentTrainingState, build_snapshot_pool, load_snapshot
from rlpkd.config import config_from_dict
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import build_datasets, heldout_split
from rlpkd.data.coco import CocoDetectionDataset, collate_detection
from rlpkd.distill.level_value import LevelValues, level_values
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

    With ``rl.reward: value`` the training split is split by ``heldout_split(…,
    search.holdout_fraction, runtime.seed)``: the held-out batch V is the first ``rl.heldout_size``
    images of its held-out part (``self.heldout``) and the env draws its training batches from the
    rest only (``self.train_set``), so no step ever trains on V.

    Counters for logging (cumulative since construction or ``reset_metrics``) are attributes;
    ``metrics()`` summarises them.
    """

    def __init__(self, env_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config_from_dict(dict(env_config["config"]), "env_config['config']")
        rl = self.config.rl
        self.lam = float(env_config.get("lam", rl.lam))
        self.reward = rl.reward
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
        self.train_set: CocoDetectionDataset = self.datasets.train
        self.heldout: DetectionBatch | None = None  # V, with the value reward
        if self.reward == "value":
            split = heldout_split(
                self.datasets, self.config.search.holdout_fraction, self.config.runtime.seed
            )
            self.train_set = split.train
            size = min(rl.heldout_size, len(split.val))
            self.heldout = collate_detection([split.val[i] for i in range(size)]).to(self.device)
        # s of the value reward: one exchange rate for the env's whole life (all episodes)
        self.value_scale = RunningValueScale()
        self.value_gflops_per_sample: float | None = None  # counted at the first value step
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
        self.batch = self._next_batch()
        infos = {agent: {"start_progress": self.state.progress} for agent in self.agents}
        return self._observations(), infos

    def step(self, action_dict: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """One student update with every slot's chosen levels; a reward per slot.

        The episode is truncated (never terminated) after ``rl.episode_steps`` updates: the
        student's run goes on, this env only stops following it.

        Raises:
            DivergenceError: the value signal (before the update), the update's loss or gradient,
                or a slot's reward is not finite (the phase is ``ENV_PHASE``, the step the
                snapshot's student step).
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

        start = time.perf_counter()
        if self.reward == "value":
            values = self._level_values()  # the student before the update, all B x 4 pairs
            _raise_if_values_diverged(values.values, state.step + 1)
            # the probe's raw KD losses (batch statistics) stand in for the gap in the metrics
            gap_before = values.kd_raw.detach().float().cpu()
        else:
            values, gap_before = None, self._gap_before  # measured when the batch was shown
        scale = state.objective.scale
        level_scale = reward_level_scale(scale.scale, scale.initialised, gap_before)
        updated, terms = self._update(masks)
        if values is not None:
            value_scale = self.value_scale.update(values.values)
            rewards = value_rewards(values.values, masks, value_scale, fractions, self.lam)
            infos = self._value_infos(values.values, masks, value_scale)
            self._count_values(values, masks, value_scale)
        else:
            gap_after = kd_losses_no_grad(
                state.student,
                self.teacher,
                state.objective,
                batch,
                torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool),
                self.config.runtime.amp,
            )
            self.gap_eval_time_s += time.perf_counter() - updated
            self.gap_eval_gflops += 2 * len(masks) * self.gap_eval_gflops_per_sample
            rewards = sample_rewards(gap_before, gap_after, level_scale, masks, fractions, self.lam)
            _raise_if_reward_diverged(rewards, gap_before, gap_after, level_scale, state.step)
            drops = normalised_gap_drop(gap_before, gap_after, level_scale)
            self.kd_gap_drop_sum += float(drops.sum())
            infos = {agent: {"kd_gap_drop": float(drops[i])} for i, agent in enumerate(self.agents)}
        # the observation's running gap sees only what Phase 3 sees: the distilled entries
        state.running_gap.update(terms.kd_raw, masks)
        self._count(masks, fractions, rewards, gap_before, level_scale)
        self.episode_step += 1

        done = self.episode_step >= self.episode_steps
        self.batch = self._next_batch()
        observations = self._observations(final=done)
        self.step_time_s += time.perf_counter() - start
        if self.config.rl.reward_baseline == "leave_one_out":
            rewards = leave_one_out_baseline(rewards)  # the metrics above keep the raw reward
        reward_dict = {agent: float(r) for agent, r in zip(self.agents, rewards, strict=True)}
        for i, agent in enumerate(self.agents):
            infos[agent] |= {
                "flops_fraction": float(fractions[i]),
                "num_levels": int(masks[i].sum()),
            }
        # a contextual bandit segment of a run that goes on: truncated, never terminated
        terminateds = {agent: False for agent in self.agents} | {"__all__": False}
        truncateds = {agent: done for agent in self.agents} | {"__all__": done}
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
        self.kd_gap_drop_sum = 0.0  # gap_drop reward only
        self.kd_gflops_sum = 0.0  # KD GFLOPs of the chosen subsets (what Phase 3 would spend)
        self.kd_flops_fraction_sum = 0.0
        # the extra cost of learning, gap_drop: two all-level no-grad gap evaluations per step
        self.gap_eval_gflops = 0.0  # estimated, see __init__
        self.gap_eval_time_s = 0.0
        # value reward: the value signal (normalised by s) and its cost
        self.value_all_levels_sum = 0.0  # Σ_l v_il / s, summed over decisions
        self.value_all_levels_sq_sum = 0.0
        self.value_chosen_sum = 0.0  # Σ_{l∈a_i} v_il / s
        self.value_level_sum = np.zeros(NUM_LEVELS)  # v_il / s per level
        self.value_positive_pairs = 0  # (sample, level) pairs with v_il > 0
        self.value_heldout_loss_sum = 0.0  # L_det(V) before each update
        self.value_gflops = 0.0  # counted once (FlopCounterMode), then per update
        self.value_time_s = 0.0
        self.update_time_s = 0.0  # the student updates themselves
        self.observation_time_s = 0.0  # student pyramid forwards for the observations
        self.step_time_s = 0.0  # whole env steps (reward signal, update, next observations)

    def metrics(self) -> dict[str, float]:
        """Per-decision means of the counters, plus the extra learning cost totals; with the value
        reward also the value signal's statistics (``value_*``, normalised by ``s`` except
        ``value_scale`` and ``value_heldout_loss``). ``mean_kd_gap_drop`` is NaN there (no gap
        drop is measured)."""
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
                "mean_kd_gap_drop": (
                    self.kd_gap_drop_sum / decisions if self.reward == "gap_drop" else float("nan")
                ),
                "kd_gflops_per_decision": self.kd_gflops_sum / decisions,
                "kd_flops_fraction_per_decision": self.kd_flops_fraction_sum / decisions,
                "gap_eval_gflops": self.gap_eval_gflops,
                "gap_eval_gflops_per_decision": self.gap_eval_gflops / decisions,
                "gap_eval_time_s": self.gap_eval_time_s,
                "update_time_s": self.update_time_s,
                "observation_time_s": self.observation_time_s,
                "step_time_s": self.step_time_s,
                "step_time_s_per_decision": self.step_time_s / decisions,
                "decisions": float(self.num_decisions),
                "updates": float(self.num_updates),
            }
            | (self._value_metrics() if self.reward == "value" else {})
        )

    def _value_metrics(self) -> dict[str, float]:
        decisions = max(self.num_decisions, 1)
        mean = self.value_all_levels_sum / decisions
        variance = max(self.value_all_levels_sq_sum / decisions - mean * mean, 0.0)
        per_level = {
            f"value_mean_{level}": float(self.value_level_sum[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        return per_level | {
            "value_mean_all_levels": mean,
            "value_std": variance**0.5,
            "value_mean_chosen": self.value_chosen_sum / decisions,
            "value_positive_share": self.value_positive_pairs / (decisions * NUM_LEVELS),
            "value_scale": float("nan")
            if self.value_scale.value is None
            else self.value_scale.value,
            "value_heldout_loss": self.value_heldout_loss_sum / max(self.num_updates, 1),
            "value_gflops": self.value_gflops,
            "value_gflops_per_decision": self.value_gflops / decisions,
            "value_time_s": self.value_time_s,
        }

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

    def _update(self, masks: torch.Tensor) -> tuple[float, Any]:
        """The student's KD update on ``self.batch`` with ``masks``, reusing the forward kept by
        ``_observations``; returns (the time it ended, the step's loss terms)."""
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
        updated = time.perf_counter()
        self.update_time_s += updated - start
        return updated, terms

    def _level_values(self) -> LevelValues:
        """The value signal of ``self.batch`` (all B x 4 pairs) on V for the student as it is now;
        the first call also counts its FLOPs (``FlopCounterMode``, as ``level_value_gflops``)."""
        state = self.state
        start = time.perf_counter()
        arguments = (
            state.student,
            self.teacher,
            state.objective,
            state.optimizer,
            self.batch,
            self.heldout,
        )
        if self.value_gflops_per_sample is None:
            with FlopCounterMode(display=False) as counter:
                values = level_values(*arguments)
            self.value_gflops_per_sample = counter.get_total_flops() / len(self.batch) / 1e9
        else:
            values = level_values(*arguments)
        self.value_time_s += time.perf_counter() - start
        self.value_gflops += self.value_gflops_per_sample * len(self.batch)
        return values

    def _value_infos(
        self, values: torch.Tensor, masks: torch.Tensor, scale: float
    ) -> dict[str, dict[str, float]]:
        """Per slot: the normalised value of its chosen levels and of all levels."""
        normalised = values.detach().float().cpu() / scale
        chosen = torch.where(masks, normalised, 0.0).sum(dim=1)
        every = normalised.sum(dim=1)
        return {
            agent: {"value": float(chosen[i]), "value_all_levels": float(every[i])}
            for i, agent in enumerate(self.agents)
        }

    def _count_values(self, values: LevelValues, masks: torch.Tensor, scale: float) -> None:
        normalised = values.values.detach().float().cpu() / scale
        every = normalised.sum(dim=1)
        self.value_all_levels_sum += float(every.sum())
        self.value_all_levels_sq_sum += float((every * every).sum())
        self.value_chosen_sum += float(torch.where(masks, normalised, 0.0).sum())
        self.value_level_sum += normalised.sum(dim=0).numpy()
        self.value_positive_pairs += int((values.values > 0).sum())
        self.value_heldout_loss_sum += values.heldout_loss

    def _observations(self, final: bool = False) -> dict[str, np.ndarray]:
        """Every slot's observation of ``self.batch``, from the student's training-mode forward
        of it that the next ``step`` trains with (as Phase 3 observes the step's own forward).

        With the gap_drop reward, first the batch's all-level KD gap is measured (eval mode, before
        that forward updates BatchNorm's running statistics); the value reward needs no gap. Then
        the forward runs with gradients and is kept for the step; after an episode's last step
        (``final``) no step follows, so there is no gap to measure and the forward runs without
        gradients, only to show the observation.
        """
        state, batch, amp = self.state, self.batch, self.config.runtime.amp
        self._gap_before, self._output = None, None
        start = time.perf_counter()
        # no step trains on the batch shown after an episode's last step
        if not final and self.reward == "gap_drop":
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
            self.config.data.level_thresholds,
            self.num_classes,
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


def _raise_if_values_diverged(values: torch.Tensor, step: int) -> None:
    """DivergenceError unless every ``v_il`` is finite, naming the first level with a non-finite
    one (checked before the update, which is then not taken)."""
    if bool(torch.isfinite(values).all()):
        return
    named = [(f"reward: value_{level}", values[:, i]) for i, level in enumerate(LEVELS)]
    term, value = first_non_finite(named) or ("reward: value", float("nan"))
    raise DivergenceError(ENV_PHASE, step, term, value)
