"""A KD budget in Phase 2: the PID Lagrangian moves λ until the policy's mean cost is the budget."""

from __future__ import annotations

import numpy as np
import pytest

from envs.decision_bank import split_by_image
from policies.budget_dual import PIDLagrangian, expected_cost
from policies.heldout_score import HeldOutScorer
from policies.ppo_setup import set_env_lam
from tests.policies.toy_bank import (
    TOY_COSTS,
    bank_env_config,
    saved_toy_bank,
    toy_bank,
    toy_bank_module,
    train_on_bank,
)


def test_the_controller_settles_a_cost_that_falls_with_the_price():
    """Against a cost that responds to λ with a lag (as a policy does), λ settles and the cost
    ends at the budget, without the growing swings of a pure integral controller."""
    dual = PIDLagrangian(budget=0.3, initial_lam=0.0)
    cost, costs = 0.8, []
    for _ in range(40):
        target = float(np.clip(0.9 - 0.4 * dual.lam, 0.0, 1.0))
        cost += 0.5 * (target - cost)  # the policy moves half way each iteration
        costs.append(cost)
        dual.update(cost)
    assert costs[-1] == pytest.approx(0.3, abs=0.01)
    assert max(abs(c - 0.3) for c in costs[-10:]) < 0.02
    assert dual.lam == pytest.approx(1.5, abs=0.1)


def test_the_controller_restores_its_state_and_starts_at_the_configured_price():
    dual = PIDLagrangian(budget=0.5, initial_lam=0.4)
    assert dual.lam == pytest.approx(0.4)
    dual.update(0.9)
    restored = PIDLagrangian.from_state(0.5, 0.4, dual.state())
    assert restored.state() == dual.state()
    assert PIDLagrangian.from_state(0.5, 0.4, {}).lam == pytest.approx(0.4)
    assert restored.update(0.2) == pytest.approx(dual.update(0.2))
    with pytest.raises(ValueError, match="fraction"):
        PIDLagrangian(budget=1.2)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_the_dual_variable_brings_a_toy_banks_mean_cost_to_the_budget(tmp_path):
    path = saved_toy_bank(tmp_path, contexts=2000, seed=0)
    bank = toy_bank(2000, seed=0)
    split = split_by_image(bank, 0.25, seed=0)
    unit = split.train.value_unit()  # the unit train_rl fixes: λ means the same as in a run
    scorer = HeldOutScorer.from_split(split, lam=0.0, unit=unit)
    budget = 0.3
    dual = PIDLagrangian(budget, initial_lam=0.0)
    env_config = bank_env_config(path, split.heldout_images, value_unit=unit)

    def evaluate(algo):
        module = toy_bank_module(algo)
        cost = expected_cost(module, split.train.observations, TOY_COSTS)
        lam = dual.update(cost)
        assert set_env_lam(algo, lam) == 1
        return {"budget_cost": cost, "budget_lam": lam} | scorer.with_lam(lam).score(module)

    algo, history = train_on_bank(
        env_config, 24, checkpoint_dir=tmp_path / "ppo", evaluate=evaluate
    )
    algo.stop()
    costs = [h["budget_cost"] for h in history]
    assert costs[0] > budget + 0.1, costs  # unconstrained, the rule costs about half
    # the cost comes down to the budget and stays near it (PPO lags λ, so it swings a little)
    assert min(abs(c - budget) for c in costs[-10:]) <= 0.02, costs
    assert abs(sum(costs[-8:]) / 8 - budget) <= 0.04, costs
    assert history[-1]["budget_lam"] > 0.0
