"""A KD budget in Phase 2: the FLOPs price λ as a dual variable, moved by a PID controller.

With ``rl.budget`` set, the policy is to distil at a mean cost of ``budget`` (a fraction of
all-level kd FLOPs). The reward keeps its form ``Σ_{l∈a} v_l / s − λ · cost(a)``; λ is no longer
fixed but follows the measured cost after every PPO iteration, the PID Lagrangian of Stooke,
Achiam and Abbeel, "Responsive Safety in Reinforcement Learning by PID Lagrangian Methods"
(ICML 2020, Algorithm 2), which damps the oscillation of plain dual ascent (an integral term
alone)::

    e = cost − budget;   I ← max(0, I + e);   D = max(0, cost − previous cost)
    λ = max(0, K_P · e + K_I · I + K_D · D)

The measured cost is the policy's *expected* cost on the training contexts,
``mean_x Σ_a π(a | x) · cost(a)`` (exact for a bank: no sampling noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from policies.level_policy_module import LevelSelectionModule

__all__ = ["PID_GAINS", "PIDLagrangian", "expected_cost"]

PID_GAINS = {"proportional": 1.0, "integral": 1.0, "derivative": 1.0}
"""K_P, K_I, K_D, in units of the value of all levels (``s``) per unit of cost fraction. With 2
for every gain, λ on the default's bank rose to 2.1 in 7 iterations while PPO lagged, and the
cost swung from 0.78 past the budget of 0.5 down to 0.28 before it settled; with 1 the swing is
smaller and the toy bank of tests/policies/test_budget_dual.py reaches its budget in ~20."""


@torch.no_grad()
def expected_cost(
    module: LevelSelectionModule, observations: np.ndarray, subset_costs: np.ndarray
) -> float:
    """The policy's mean expected cost ``Σ_a π(a | x) cost(a)`` over ``observations``."""
    logits = module.subset_logits(torch.as_tensor(observations, dtype=torch.float32)).double()
    probabilities = torch.softmax(logits, dim=-1).numpy()
    return float((probabilities @ np.asarray(subset_costs, dtype=np.float64)).mean())


@dataclass
class PIDLagrangian:
    """λ for a budget (module docstring); ``integral`` starts where λ equals ``initial_lam``."""

    budget: float
    initial_lam: float = 0.0
    proportional: float = PID_GAINS["proportional"]
    integral_gain: float = PID_GAINS["integral"]
    derivative: float = PID_GAINS["derivative"]
    integral: float = math.nan
    previous_cost: float = math.nan
    lam: float = math.nan

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget <= 1.0:
            raise ValueError(f"a budget is a fraction of all-level kd FLOPs; got {self.budget}")
        if math.isnan(self.integral):
            self.integral = self.initial_lam / self.integral_gain if self.integral_gain else 0.0
        if math.isnan(self.lam):
            self.lam = self.initial_lam

    def update(self, cost: float) -> float:
        """Fold in a measured cost; returns the new λ."""
        error = cost - self.budget
        self.integral = max(0.0, self.integral + error)
        rise = 0.0 if math.isnan(self.previous_cost) else max(0.0, cost - self.previous_cost)
        self.previous_cost = cost
        self.lam = max(
            0.0,
            self.proportional * error + self.integral_gain * self.integral + self.derivative * rise,
        )
        return self.lam

    def state(self) -> dict[str, float]:
        """What a resumed Phase 2 restores (``from_state``)."""
        return {
            "budget_integral": self.integral,
            "budget_previous_cost": self.previous_cost,
            "budget_next_lam": self.lam,
        }

    @classmethod
    def from_state(cls, budget: float, initial_lam: float, state: dict[str, Any]) -> PIDLagrangian:
        """The controller a history entry's ``state()`` recorded (a fresh one when it has none)."""
        try:
            return cls(
                budget,
                initial_lam,
                integral=float(state["budget_integral"]),
                previous_cost=float(state["budget_previous_cost"]),
                lam=float(state["budget_next_lam"]),
            )
        except (KeyError, TypeError, ValueError):
            return cls(budget, initial_lam)

    def to_dict(self) -> dict[str, float]:
        """All fields (for the learning record)."""
        return asdict(self)
