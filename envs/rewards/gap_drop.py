"""``gap_drop``: the first version's reward, kept for comparison (DESIGN §5).

``reward_i = Σ_l (gap_before − gap_after)_il / scale_l − λ · kd_flops(a_i) / kd_flops(all)``: the
sample's normalised all-level KD-gap drop over the shared update. Most of it is the other samples'
update, not the sample's own credit, and it says nothing of the subsets the sample did not choose
(no full information), so Phase 2 learns from it on the live env (``rl.learner: live``).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from envs.rewards.base import ENV_PHASE, REWARDS, Credit, RewardSetup, signal_cost_metrics
from rlpkd.data.batch import DetectionBatch
from rlpkd.errors import DivergenceError
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.training.kd_step import first_non_finite, kd_losses_no_grad

__all__ = ["reward_level_scale", "normalised_gap_drop", "sample_rewards", "GapDropReward"]


def reward_level_scale(running_scale: Tensor, initialised: Tensor, gap_before: Tensor) -> Tensor:
    """[4] per-level gap scale: the objective's running scale, or, at a level it has not seen yet,
    the batch's mean gap before the update (so a fresh student's first step is normalised too)."""
    fallback = gap_before.detach().float().mean(dim=0).cpu()
    return torch.where(initialised.cpu(), running_scale.detach().float().cpu(), fallback)


def normalised_gap_drop(gap_before: Tensor, gap_after: Tensor, level_scale: Tensor) -> Tensor:
    """[B] ``Σ_l (gap_before − gap_after)_il / scale_l``: the sample's normalised KD improvement."""
    scale = level_scale.float().cpu().clamp_min(1e-12)
    return ((gap_before.float().cpu() - gap_after.float().cpu()) / scale).sum(dim=1)


def sample_rewards(
    gap_before: Tensor,
    gap_after: Tensor,
    level_scale: Tensor,
    masks: Tensor,
    subset_flops_fraction: Tensor,
    lam: float,
) -> Tensor:
    """Per-sample rewards [B] of one student update::

        reward_i = Σ_l (gap_before − gap_after)_il / scale_l  −  λ · kd_flops(levels_i) / kd_flops(all)

    Args:
        gap_before: [B, 4] raw teacher–student KD loss of each sample at every level (all levels,
            whatever was chosen), measured without an update just before the step.
        gap_after: [B, 4] the same, on the same batch, just after the step.
        level_scale: [4] per-level normalisation (``reward_level_scale``), so no level dominates
            by its raw size.
        masks: [B, 4] bool, the levels each sample chose (checks the FLOPs fractions: an empty
            subset costs nothing).
        subset_flops_fraction: [B] ``kd_flops(levels_i) / kd_flops(all)``.
        lam: λ, the price of distilling all levels in units of normalised gap drop.
    """
    if gap_before.shape != gap_after.shape or masks.shape != gap_before.shape:
        raise ValueError(
            f"gap_before {tuple(gap_before.shape)}, gap_after {tuple(gap_after.shape)} and masks "
            f"{tuple(masks.shape)} must all be [B, {NUM_LEVELS}]"
        )
    fraction = subset_flops_fraction.float().cpu()
    if bool((fraction[~masks.cpu().any(dim=1)] != 0).any()):
        raise ValueError("a sample that chose no level has a non-zero FLOPs fraction")
    return normalised_gap_drop(gap_before, gap_after, level_scale) - lam * fraction


def _raise_if_reward_diverged(
    rewards: Tensor, gap_before: Tensor, gap_after: Tensor, level_scale: Tensor, step: int
) -> None:
    """DivergenceError unless every reward is finite, naming what made it non-finite: the KD gap
    at a level before or after the update, the reward's level scale, else the reward itself."""
    if bool(torch.isfinite(rewards).all()):
        return
    named: list[tuple[str, Tensor]] = []
    for i, level in enumerate(LEVELS):
        named += [
            (f"reward: kd_gap_before_{level}", gap_before[:, i]),
            (f"reward: kd_gap_after_{level}", gap_after[:, i]),
            (f"reward: level_scale_{level}", level_scale[i]),
        ]
    named.append(("reward", rewards))
    term, value = first_non_finite(named) or ("reward", float("nan"))
    raise DivergenceError(ENV_PHASE, step, term, value)


@REWARDS.register("gap_drop")
class GapDropReward:
    """The gap-drop reward (module docstring): two all-level no-grad gap evaluations per update,
    one when the batch is shown and one after the update. The env trains on the whole training
    split (there is no V)."""

    name = "gap_drop"
    full_information = False

    def __init__(self, setup: RewardSetup) -> None:
        self.train_set = setup.datasets.train
        self.teacher = setup.teacher
        self.lam = setup.lam
        self.amp = setup.config.runtime.amp
        # one no-grad gap evaluation per sample: the teacher at all levels + the KD loss (counted
        # with its backward, a slight overestimate) + a student forward (~1/3 of its train step)
        flops = setup.flops
        self.gflops_per_sample = flops.kd_gflops(LEVELS) + flops.student_train_gflops() / 3
        self._gap_before: Tensor | None = None
        self.reset_metrics()

    def _gap(self, state, batch: DetectionBatch) -> Tensor:
        all_levels = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool)
        start = time.perf_counter()
        gap = kd_losses_no_grad(
            state.student, self.teacher, state.objective, batch, all_levels, self.amp
        )
        self.time_s += time.perf_counter() - start
        self.gflops += len(batch) * self.gflops_per_sample
        return gap

    def observe(self, state, batch: DetectionBatch) -> None:
        """The batch's all-level KD gap, before the step's forward touches BatchNorm's running
        statistics."""
        self._gap_before = self._gap(state, batch)

    def before_update(self, state, batch: DetectionBatch, step: int) -> Tensor:
        """The gap measured when the batch was shown."""
        if self._gap_before is None:
            raise RuntimeError("GapDropReward.before_update called before observe")
        return self._gap_before

    def credit(self, state, batch, masks, fractions, level_scale, step) -> Credit:
        """``sample_rewards`` from the gap before and after the update (DivergenceError naming
        the level on a non-finite reward)."""
        gap_before = self.before_update(state, batch, step)
        gap_after = self._gap(state, batch)
        rewards = sample_rewards(gap_before, gap_after, level_scale, masks, fractions, self.lam)
        _raise_if_reward_diverged(rewards, gap_before, gap_after, level_scale, step)
        drops = normalised_gap_drop(gap_before, gap_after, level_scale)
        self.drop_sum += float(drops.sum())
        self._gap_before = None
        return Credit(rewards, [{"kd_gap_drop": float(d)} for d in drops])

    def reset_metrics(self) -> None:
        """Zero the gap evaluations' counters."""
        self.drop_sum = 0.0
        self.gflops = 0.0  # estimated, see __init__
        self.time_s = 0.0

    def metrics(self, decisions: int, updates: int) -> dict[str, float]:
        """Mean normalised gap drop per decision and the gap evaluations' cost."""
        decisions = max(decisions, 1)
        return {"mean_kd_gap_drop": self.drop_sum / decisions} | signal_cost_metrics(
            "gap_eval", self.gflops, self.time_s, decisions
        )
