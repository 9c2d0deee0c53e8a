"""The protocol every decision reward follows, and the registry ``rl.reward`` names one from.

A reward owns its signal (what it measures around a student update), its scale, its counters and
its metrics. The env calls it at three points of a step:

1. ``observe(state, batch)`` when the batch is shown, before the step's student forward;
2. ``before_update(state, batch, step)`` just before the update; returns the batch's raw
   per-level KD gap (for the env's shared metrics);
3. ``credit(state, batch, masks, fractions, level_scale, step)`` after the update; returns each
   decision's reward (a ``Credit``).

Adding a reward is one new module that registers a class with ``@REWARDS.register(name)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from envs.snapshots import StudentTrainingState
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.coco import CocoDetectionDataset
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import masks_to_subsets
from rlpkd.models.detector import PyramidDetector
from rlpkd.registry import Registry

__all__ = [
    "ENV_PHASE",
    "RewardSetup",
    "Credit",
    "DecisionReward",
    "REWARDS",
    "build_reward",
    "signal_cost_metrics",
    "subset_flops_fractions",
    "leave_one_out_baseline",
]

ENV_PHASE = "the policy-learning env"
"""How the env's student updates are named in a DivergenceError."""


@dataclass(frozen=True)
class RewardSetup:
    """What a reward is built from: the experiment, its data, the frozen teacher and the price."""

    config: Config
    """The resolved experiment config (``rl`` holds the reward's settings)."""
    datasets: DetectionDatasets
    """Training and validation data (a reward may hold some training images out, as V)."""
    teacher: PyramidDetector
    """The frozen teacher, on ``device``."""
    flops: FlopsModel
    """The analytic FLOPs model (for the cost of the reward's own signal)."""
    device: torch.device
    """Where the student trains."""
    lam: float
    """λ: the price of distilling all levels, in the reward's unit."""
    value_unit: float | None = None
    """A fixed unit for the value signal (the decision bank's), or None for a running one."""


@dataclass
class Credit:
    """What a reward says of one update's B decisions."""

    rewards: Tensor
    """[B] each decision's reward (before any leave-one-out baseline)."""
    infos: list[dict[str, float]]
    """Per decision: the reward's own numbers (RLlib infos)."""
    level_values: Tensor | None = None
    """[B, 4] raw per-(sample, level) values when the reward knows them (full information: the
    reward of every subset follows), else None."""


@runtime_checkable
class DecisionReward(Protocol):
    """One reward of a level-selection decision (see the module docstring for the call order)."""

    name: str
    full_information: bool
    """True when ``credit`` gives every level's value, i.e. the reward of all 16 subsets."""
    train_set: CocoDetectionDataset
    """The images the env may train on (a reward may hold some out)."""

    def observe(self, state: StudentTrainingState, batch: DetectionBatch) -> None:
        """The batch is shown (before the step's student forward)."""

    def before_update(
        self, state: StudentTrainingState, batch: DetectionBatch, step: int
    ) -> Tensor:
        """Just before the update; returns the raw per-level KD gap [B, 4] of the batch."""

    def credit(
        self,
        state: StudentTrainingState,
        batch: DetectionBatch,
        masks: Tensor,
        fractions: Tensor,
        level_scale: Tensor,
        step: int,
    ) -> Credit:
        """Each decision's reward after the update with ``masks`` [B, 4]."""

    def reset_metrics(self) -> None:
        """Zero the reward's counters."""

    def metrics(self, decisions: int, updates: int) -> dict[str, float]:
        """The reward's own statistics; always ``reward_signal_gflops``,
        ``reward_signal_gflops_per_decision`` and ``reward_signal_time_s`` (its extra cost)."""


def signal_cost_metrics(
    prefix: str, gflops: float, time_s: float, decisions: int
) -> dict[str, float]:
    """A reward signal's cost (GFLOPs, per decision, seconds) under its own ``prefix`` and again
    as the ``reward_signal_*`` every reward reports."""
    cost = {"gflops": gflops, "gflops_per_decision": gflops / decisions, "time_s": time_s}
    return {f"{prefix}_{key}": value for key, value in cost.items()} | {
        f"reward_signal_{key}": value for key, value in cost.items()
    }


REWARDS: Registry[DecisionReward] = Registry("reward")
"""Reward name (``rl.reward``) -> class taking a ``RewardSetup``."""


def build_reward(name: str, setup: RewardSetup) -> DecisionReward:
    """The reward registered as ``name`` (a ConfigError lists the valid names)."""
    return REWARDS.build(name, setup)


def subset_flops_fractions(masks: Tensor, fraction_table: Tensor) -> Tensor:
    """[B] FLOPs fraction of each sample's chosen levels (``masks`` [B, 4] bool; ``fraction_table``
    [16] on the CPU, ``FlopsModel.subset_kd_fractions()``)."""
    return fraction_table[masks_to_subsets(masks.cpu())]


def leave_one_out_baseline(rewards: Tensor) -> Tensor:
    """[B] ``r_i − mean_{j≠i} r_j``: the rewards of one update less the leave-one-out mean (RLOO,
    Kool et al., "Buy 4 REINFORCE samples, get a baseline for free!", 2019). The baseline of
    decision i does not depend on its own action, so the policy gradient stays unbiased, while what
    the B decisions of one update share (the step's held-out gradient, its learning rate) cancels.
    """
    if rewards.numel() < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 decisions per update")
    others = (rewards.sum() - rewards) / (rewards.numel() - 1)
    return rewards - others
