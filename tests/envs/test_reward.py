"""The leave-one-out reward baseline."""

from __future__ import annotations

import pytest
import torch

from envs.reward import leave_one_out_baseline


def test_leave_one_out_baseline_removes_what_the_update_shares():
    rewards = torch.tensor([1.0, 2.0, 6.0])
    baselined = leave_one_out_baseline(rewards)
    torch.testing.assert_close(baselined, torch.tensor([1.0 - 4.0, 2.0 - 3.5, 6.0 - 1.5]))
    # a shift shared by every decision of the update cancels; the ranking of decisions stays
    torch.testing.assert_close(leave_one_out_baseline(rewards + 10.0), baselined)
    assert torch.equal(baselined.argsort(), rewards.argsort())
    with pytest.raises(ValueError):
        leave_one_out_baseline(torch.tensor([1.0]))
