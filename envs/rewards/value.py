"""``value``: a decision's reward is the value of its chosen levels minus their FLOPs (DESIGN §5).

``reward_i = Σ_{l∈a_i} v_il / s − λ · kd_flops(a_i) / kd_flops(all)``, with ``v_il`` the first-order
effect of distilling level l on sample i in this update on the detection loss of a fixed held-out
batch V (``rlpkd.distill.level_value``; Ren et al. 2018, TracIn) and ``s`` the unit of value: the
typical ``|Σ_l v_il|``. The signal gives all four values of every decision, so the reward of all
16 subsets is known (``full_information``): the decision bank keeps them.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from envs.rewards.base import ENV_PHASE, REWARDS, Credit, RewardSetup, signal_cost_metrics
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import heldout_split
from rlpkd.data.coco import collate_detection
from rlpkd.distill.level_value import LevelValues, level_values
from rlpkd.errors import DivergenceError
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.training.kd_step import first_non_finite

__all__ = [
    "VALUE_SCALE_MOMENTUM",
    "VALUE_SCALE_FLOOR",
    "RunningValueScale",
    "FixedValueScale",
    "value_rewards",
    "ValueReward",
]

VALUE_SCALE_MOMENTUM = 0.99
"""Momentum of ``RunningValueScale``'s EMA once it has seen 100 updates (a running mean before)."""
VALUE_SCALE_FLOOR = 1e-12
"""``s`` never falls below this (a student whose values are all 0 gets ``−λ · fraction``)."""


class RunningValueScale:
    """``s`` as a running mean: the typical value of distilling all levels on one sample.

    A running mean of the batch mean of ``|Σ_l v_il|`` over the updates seen so far that turns
    into an EMA of momentum ``VALUE_SCALE_MOMENTUM`` (about the last 100 updates): update t folds
    its batch in with weight ``max(1/t, 1 − momentum)``. Updated *before* it normalises a batch and
    clamped to at least ``VALUE_SCALE_FLOOR``. It drifts while the env runs, so a learning curve in
    its unit mixes a changing exchange rate into the return; Phase 2 therefore fixes the unit from
    the decision bank before PPO starts (``FixedValueScale``) and uses this one only when no unit
    is given (a stand-alone env).
    """

    def __init__(self, momentum: float = VALUE_SCALE_MOMENTUM) -> None:
        self.momentum = float(momentum)
        self.value: float | None = None
        self.updates = 0

    def update(self, values: Tensor) -> float:
        """Fold the batch's ``[B, 4]`` values in; returns the scale ``s`` to divide them by."""
        batch_mean = float(values.detach().float().sum(dim=1).abs().mean())
        self.updates += 1
        weight = max(1.0 / self.updates, 1.0 - self.momentum)
        previous = batch_mean if self.value is None else self.value
        self.value = (1.0 - weight) * previous + weight * batch_mean
        return max(self.value, VALUE_SCALE_FLOOR)


class FixedValueScale:
    """``s`` fixed for the whole run (the decision bank's mean ``|Σ_l v_il|``), so the return is in
    one unit from the first PPO iteration to the last and a rising curve means a better policy."""

    def __init__(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"a fixed value unit must be > 0, got {value}")
        self.value = float(value)
        self.updates = 0

    def update(self, values: Tensor) -> float:
        """Counts the update; returns the fixed ``s``."""
        self.updates += 1
        return self.value


def value_rewards(
    values: Tensor, masks: Tensor, scale: float, subset_flops_fraction: Tensor, lam: float
) -> Tensor:
    """Per-sample rewards [B] from the value signal::

        reward_i = Σ_{l∈a_i} v_il / s  −  λ · kd_flops(a_i) / kd_flops(all)

    Args:
        values: [B, 4] ``v_il`` (``rlpkd.distill.level_value.level_values(...).values``), > 0 where
            distilling level l on sample i is predicted to lower the held-out detection loss.
        masks: [B, 4] bool, the levels each sample chose.
        scale: ``s`` > 0.
        subset_flops_fraction: [B] ``kd_flops(a_i) / kd_flops(all)`` (``subset_flops_fractions``).
        lam: λ, the price of all levels in units of ``s``.
    """
    if values.shape != masks.shape or values.shape[1:] != (NUM_LEVELS,):
        raise ValueError(
            f"values {tuple(values.shape)} and masks {tuple(masks.shape)} must both be "
            f"[B, {NUM_LEVELS}]"
        )
    if not scale > 0:
        raise ValueError(f"the value scale must be > 0, got {scale}")
    chosen = torch.where(masks.cpu(), values.detach().float().cpu(), 0.0).sum(dim=1)
    return chosen / scale - lam * subset_flops_fraction.float().cpu()


def _raise_if_values_diverged(values: Tensor, step: int) -> None:
    """DivergenceError unless every ``v_il`` is finite, naming the first level with a non-finite
    one (checked before the update, which is then not taken)."""
    if bool(torch.isfinite(values).all()):
        return
    named = [(f"reward: value_{level}", values[:, i]) for i, level in enumerate(LEVELS)]
    term, value = first_non_finite(named) or ("reward: value", float("nan"))
    raise DivergenceError(ENV_PHASE, step, term, value)


@REWARDS.register("value")
class ValueReward:
    """The value reward (module docstring). V is held out of the env's training images.

    The training split is split by ``heldout_split(…, search.holdout_fraction, runtime.seed)``: V
    is the first ``rl.heldout_size`` images of its held-out part (``heldout``), and the env draws
    its training batches from the rest only (``train_set``), so no step ever trains on V.
    """

    name = "value"
    full_information = True

    def __init__(self, setup: RewardSetup) -> None:
        config = setup.config
        split = heldout_split(setup.datasets, config.search.holdout_fraction, config.runtime.seed)
        self.train_set = split.train
        size = min(config.rl.heldout_size, len(split.val))
        self.heldout: DetectionBatch = collate_detection([split.val[i] for i in range(size)]).to(
            setup.device
        )
        self.teacher = setup.teacher
        self.lam = setup.lam
        self.scale: RunningValueScale | FixedValueScale = (
            RunningValueScale() if setup.value_unit is None else FixedValueScale(setup.value_unit)
        )
        self.gflops_per_sample: float | None = None  # counted at the first call
        self._values: LevelValues | None = None
        self.reset_metrics()

    def observe(self, state, batch: DetectionBatch) -> None:
        """Nothing to measure when the batch is shown."""

    def before_update(self, state, batch: DetectionBatch, step: int) -> Tensor:
        """The value signal of all B x 4 pairs for the student as it is now; stops the env
        (``DivergenceError``, term ``reward: value_<level>``) on a non-finite ``v_il``. Returns
        the probe's raw KD losses (batch statistics), which stand in for the gap in the metrics."""
        self._values = self._level_values(state, batch)
        _raise_if_values_diverged(self._values.values, step)
        return self._values.kd_raw.detach().float().cpu()

    def credit(self, state, batch, masks, fractions, level_scale, step) -> Credit:
        """``value_rewards`` of the values ``before_update`` measured."""
        if self._values is None:
            raise RuntimeError("ValueReward.credit called before before_update")
        values = self._values.values.detach().float().cpu()
        scale = self.scale.update(values)
        rewards = value_rewards(values, masks, scale, fractions, self.lam)
        normalised = values / scale
        chosen = torch.where(masks.cpu(), normalised, 0.0).sum(dim=1)
        every = normalised.sum(dim=1)
        infos = [
            {"value": float(chosen[i]), "value_all_levels": float(every[i])}
            for i in range(len(values))
        ]
        self._count(values, normalised, chosen, every)
        self._values = None
        return Credit(rewards, infos, level_values=values)

    def reset_metrics(self) -> None:
        """Zero the value signal's counters."""
        self.all_levels_sum = 0.0  # Σ_l v_il / s, summed over decisions
        self.all_levels_sq_sum = 0.0
        self.chosen_sum = 0.0  # Σ_{l∈a_i} v_il / s
        self.level_sum = torch.zeros(NUM_LEVELS, dtype=torch.float64)  # v_il / s per level
        self.positive_pairs = 0  # (sample, level) pairs with v_il > 0
        self.heldout_loss_sum = 0.0  # L_det(V) before each update
        self.gflops = 0.0  # counted once (FlopCounterMode), then per update
        self.time_s = 0.0

    def metrics(self, decisions: int, updates: int) -> dict[str, float]:
        """``value_*`` statistics (normalised by ``s`` but ``value_scale`` and
        ``value_heldout_loss``) and the signal's cost."""
        decisions = max(decisions, 1)
        mean = self.all_levels_sum / decisions
        variance = max(self.all_levels_sq_sum / decisions - mean * mean, 0.0)
        per_level = {
            f"value_mean_{level}": float(self.level_sum[i]) / decisions
            for i, level in enumerate(LEVELS)
        }
        scale = self.scale.value
        return (
            per_level
            | {
                "value_mean_all_levels": mean,
                "value_std": variance**0.5,
                "value_mean_chosen": self.chosen_sum / decisions,
                "value_positive_share": self.positive_pairs / (decisions * NUM_LEVELS),
                "value_scale": float("nan") if scale is None else scale,
                "value_heldout_loss": self.heldout_loss_sum / max(updates, 1),
            }
            | signal_cost_metrics("value", self.gflops, self.time_s, decisions)
        )

    def _level_values(self, state, batch: DetectionBatch) -> LevelValues:
        """``level_values`` on V; the first call also counts its FLOPs (``FlopCounterMode``)."""
        start = time.perf_counter()
        training = state.distillation_state(self.teacher)
        if self.gflops_per_sample is None:
            with FlopCounterMode(display=False) as counter:
                values = level_values(training, batch, self.heldout)
            self.gflops_per_sample = counter.get_total_flops() / len(batch) / 1e9
        else:
            values = level_values(training, batch, self.heldout)
        self.time_s += time.perf_counter() - start
        self.gflops += self.gflops_per_sample * len(batch)
        self.heldout_loss_sum += values.heldout_loss
        self.positive_pairs += int((values.values > 0).sum())
        return values

    def _count(self, values: Tensor, normalised: Tensor, chosen: Tensor, every: Tensor) -> None:
        self.all_levels_sum += float(every.sum())
        self.all_levels_sq_sum += float((every * every).sum())
        self.chosen_sum += float(chosen.sum())
        self.level_sum += normalised.sum(dim=0).double()
