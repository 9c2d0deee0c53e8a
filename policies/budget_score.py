"""Learning measured at a KD budget: the value a policy's choices buy when they must cost ``b``.

With ``rl.budget`` Phase 3 does not take the policy's argmax: it spends the budget on the
(sample, subset) choices of highest log-probability (``rlpkd.training.budget_allocation``). The
same allocation on banked contexts, whose values of all four levels are known, scores a policy
exactly and at the same cost for every PPO iteration, whatever λ the dual variable had then::

    budget score = (value(policy) − value(random)) / (value(oracle) − value(random))

where *value* is the mean ``Σ_{l∈a} v_l / s`` of the allocated subsets over the contexts, *random*
allocates by random scores (mean of a few draws), and the *oracle* allocates by the true values
(the value-greedy bound). Beside it the mix of the two static subsets around the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.decision_bank import SUBSET_LEVELS, DecisionBank
from policies.level_policy_module import LevelSelectionModule
from rlpkd.levels import NUM_SUBSETS
from rlpkd.training.budget_allocation import allocate_subsets
from rlpkd.training.budget_selection import static_pair_scores

__all__ = [
    "per_context_table",
    "allocated_value",
    "static_subsets_around",
    "BudgetScorer",
]

RANDOM_DRAWS = 5


def per_context_table(values: np.ndarray) -> np.ndarray:
    """[N, 16] each context's subset values ``Σ_{l∈a} v_l`` above their mean, over their span
    (max − min): every context weighs the same, so a few contexts with extreme values (the value
    signal is heavy-tailed) do not decide the score."""
    table = values @ SUBSET_LEVELS.T
    span = table.max(axis=1, keepdims=True) - table.min(axis=1, keepdims=True)
    return (table - table.mean(axis=1, keepdims=True)) / np.where(span > 0, span, 1.0)


def allocated_value(
    scores: np.ndarray,
    values: np.ndarray,
    costs: np.ndarray,
    budget: float,
    per_context: bool = False,
) -> float:
    """Mean ``Σ_{l∈a} v_l`` per context (``per_context``: of ``per_context_table``) of the
    subsets ``allocate_subsets`` gives ``scores`` [N, 16] under the allowance ``budget × N``
    (``values`` [N, 4], ``costs`` [16])."""
    allowance = budget * len(scores)
    chosen = allocate_subsets(torch.as_tensor(scores), torch.as_tensor(costs), allowance).numpy()
    table = per_context_table(values) if per_context else values @ SUBSET_LEVELS.T
    return float(table[np.arange(len(table)), chosen].mean())


def static_subsets_around(
    bank: DecisionBank, costs: np.ndarray, fraction: float
) -> tuple[int, int]:
    """(best at or below ``fraction``, best above it): the subsets of highest mean value
    ``Σ_{l∈a} v_l`` over the bank's contexts among those that cost at most / more than
    ``fraction`` of all-level kd FLOPs (no KD at or below, all levels above at the least)."""
    value = bank.level_values.mean(axis=0) @ SUBSET_LEVELS.T
    costs = np.asarray(costs, dtype=np.float64)
    below = np.flatnonzero(costs <= fraction + 1e-9)
    above = np.flatnonzero(costs > fraction + 1e-9)
    low = int(below[np.argmax(value[below])])
    high = int(above[np.argmax(value[above])]) if len(above) else low
    return low, high


@torch.no_grad()
def _log_probabilities(module: LevelSelectionModule, observations: np.ndarray) -> np.ndarray:
    logits = module.subset_logits(torch.as_tensor(observations, dtype=torch.float32)).double()
    return torch.log_softmax(logits, dim=-1).numpy()


@dataclass
class BudgetScorer:
    """Scores a policy's budgeted allocation on a set of banked contexts."""

    observations: np.ndarray
    values: np.ndarray
    """[N, 4] ``v / s``."""
    costs: np.ndarray
    budget: float
    static_pair: tuple[int, int]
    random_value: float
    oracle_value: float
    per_context: bool = False
    """Score with ``per_context_table`` (every context weighs the same)."""

    @classmethod
    def from_bank(
        cls,
        bank: DecisionBank,
        unit: float,
        budget: float,
        static_pair: tuple[int, int],
        seed: int = 0,
        per_context: bool = False,
    ) -> BudgetScorer:
        """The contexts of ``bank``, values in units of ``unit``; random and oracle computed."""
        values = bank.level_values / unit
        costs = bank.subset_costs
        rng = np.random.default_rng(seed)
        random = np.mean(
            [
                allocated_value(
                    rng.random((len(values), NUM_SUBSETS)), values, costs, budget, per_context
                )
                for _ in range(RANDOM_DRAWS)
            ]
        )
        truth = per_context_table(values) if per_context else values @ SUBSET_LEVELS.T
        oracle = allocated_value(truth, values, costs, budget, per_context)
        return cls(
            bank.observations,
            values,
            costs,
            budget,
            static_pair,
            float(random),
            oracle,
            per_context,
        )

    def normalised(self, value: float) -> float:
        """(value − random) / (oracle − random)."""
        span = self.oracle_value - self.random_value
        return (value - self.random_value) / span if span > 0 else float("nan")

    def static_mix_score(self) -> float:
        """The static mix's budget score."""
        scores = static_pair_scores(len(self.values), *self.static_pair).numpy()
        return self.normalised(
            allocated_value(scores, self.values, self.costs, self.budget, self.per_context)
        )

    def score(self, module: LevelSelectionModule) -> float:
        """The policy's budget score."""
        scores = _log_probabilities(module, self.observations)
        return self.normalised(
            allocated_value(scores, self.values, self.costs, self.budget, self.per_context)
        )
