"""The rewards as objects: one protocol, one registry; the leave-one-out baseline; the fixed unit."""

from __future__ import annotations

import pytest
import torch

from envs.rewards import REWARDS, build_reward, leave_one_out_baseline
from envs.rewards.gap_drop import GapDropReward
from envs.rewards.value import FixedValueScale, RunningValueScale, ValueReward
from rlpkd.errors import ConfigError


def test_leave_one_out_baseline_removes_what_the_update_shares():
    rewards = torch.tensor([1.0, 2.0, 6.0])
    baselined = leave_one_out_baseline(rewards)
    torch.testing.assert_close(baselined, torch.tensor([1.0 - 4.0, 2.0 - 3.5, 6.0 - 1.5]))
    # a shift shared by every decision of the update cancels; the ranking of decisions stays
    torch.testing.assert_close(leave_one_out_baseline(rewards + 10.0), baselined)
    assert torch.equal(baselined.argsort(), rewards.argsort())
    with pytest.raises(ValueError):
        leave_one_out_baseline(torch.tensor([1.0]))


def test_rewards_are_registered_classes_behind_one_protocol():
    assert REWARDS.names() == ["gap_drop", "value"]
    assert REWARDS.get("value") is ValueReward and REWARDS.get("gap_drop") is GapDropReward
    for name in REWARDS.names():
        reward = REWARDS.get(name)
        for method in ("observe", "before_update", "credit", "reset_metrics", "metrics"):
            assert callable(getattr(reward, method)), (name, method)
        assert isinstance(reward.full_information, bool)
    # only the value reward knows the reward of every subset
    assert ValueReward.full_information and not GapDropReward.full_information
    with pytest.raises(ConfigError, match="unknown reward 'drop'; valid: gap_drop, value"):
        build_reward("drop", None)


def test_a_fixed_unit_does_not_drift_while_a_running_one_does():
    values = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    fixed, running = FixedValueScale(3.0), RunningValueScale()
    seen_fixed = [fixed.update(k * values) for k in (1.0, 10.0, 100.0)]
    seen_running = [running.update(k * values) for k in (1.0, 10.0, 100.0)]
    assert seen_fixed == [3.0, 3.0, 3.0] and fixed.updates == 3
    assert seen_running[0] == pytest.approx(2.0) and seen_running[-1] > seen_running[0]
    with pytest.raises(ValueError, match="> 0"):
        FixedValueScale(0.0)
