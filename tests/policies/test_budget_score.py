"""The budget score: a policy's allocation at exactly the budget, between random (0) and the
value-greedy oracle (1), on banked contexts whose values are known."""

from __future__ import annotations

import numpy as np
import pytest

from envs.decision_bank import SUBSET_LEVELS, DecisionBank
from policies.budget_score import (
    BudgetScorer,
    allocated_value,
    static_subsets_around,
)
from rlpkd.levels import subset_to_index
from rlpkd.training.budget_selection import static_pair_scores

COSTS = np.array([0.0] + [0.5] * 14 + [1.0])  # every proper subset 0.5, all levels 1


def _bank(values: np.ndarray) -> DecisionBank:
    n = len(values)
    return DecisionBank(
        observations=np.zeros((n, 3), np.float32),
        level_values=values,
        image_ids=np.arange(n, dtype=np.int64),
        progress=np.zeros(n),
        updates=np.arange(n, dtype=np.int64),
        subset_costs=COSTS,
        metadata={},
    )


def test_the_oracle_scores_one_and_a_hand_computed_static_mix_scores_what_it_should():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 4))
    bank = _bank(values)
    all_index = subset_to_index(("P2", "P3", "P4", "P5"))
    scorer = BudgetScorer.from_bank(bank, 1.0, 0.5, (0, all_index))
    truth = values @ SUBSET_LEVELS.T
    assert scorer.normalised(allocated_value(truth, values, COSTS, 0.5)) == pytest.approx(1.0)
    assert scorer.normalised(scorer.random_value) == pytest.approx(0.0)
    # the mix of no KD and all levels at 0.5: as many contexts as the allowance pays for (20)
    # get all levels, the rest none; with the same values in every context it is worth half
    same = np.tile(values[0], (40, 1))
    mix = allocated_value(static_pair_scores(40, 0, all_index), same, COSTS, 0.5)
    assert mix == pytest.approx(0.5 * same[0].sum())
    scorer_same = BudgetScorer.from_bank(_bank(same), 1.0, 0.5, (0, all_index))
    assert scorer_same.static_mix_score() == pytest.approx(scorer_same.normalised(mix))


def test_the_static_pair_is_the_best_bank_value_at_or_below_and_above_the_cost():
    values = np.tile([1.0, 2.0, -1.0, 0.5], (10, 1))  # P3 is the most valuable single level
    low, high = static_subsets_around(_bank(values), COSTS, 0.5)
    assert low == subset_to_index(("P2", "P3", "P5"))  # all proper subsets cost 0.5
    assert high == subset_to_index(("P2", "P3", "P4", "P5"))
