"""Learning measured on held-out decision contexts (DESIGN §5, full information).

On contexts from images that no training context comes from, every subset's reward is known
(``DecisionBank.reward_table``), so a policy's greedy choices are scored exactly, with no sampling:

    normalised score = (mean r(greedy) − mean r(random)) / (mean r(oracle) − mean r(random))

where *random* is the mean over the 16 subsets of each context (a uniformly random choice) and
the *oracle* takes each context's best subset from its own values. By construction the oracle
scores 1 and random 0. Beside the policy: the best static subset (one subset for every context,
chosen on the training contexts) and a supervised predictor of the values from the observation
(``policies.value_predictor``), the ceiling of what the observation can tell a policy.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from envs.decision_bank import SUBSET_LEVELS, BankSplit
from policies.choice_scores import normalised_score, per_context_score, random_and_oracle_rewards
from policies.level_policy_module import LevelSelectionModule
from policies.value_predictor import best_subsets, fit_value_predictor
from rlpkd.levels import format_levels, index_to_subset
from rlpkd.report.mutual_information import mutual_information_bits

__all__ = [
    "subset_name",
    "normalised_score",
    "per_context_score",
    "score_difference_interval",
    "static_subset",
    "choice_summary",
    "greedy_choices",
    "HeldOutScorer",
]

BOOTSTRAP_ROUNDS = 1000


def subset_name(index: int) -> str:
    """'P2,P3' for a subset index ('none', 'all' for the empty and the full one)."""
    return format_levels(index_to_subset(int(index)))


def score_difference_interval(
    table: np.ndarray,
    choices: np.ndarray,
    reference: np.ndarray,
    image_ids: np.ndarray,
    level: float = 0.95,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Score of ``choices`` minus score of ``reference`` on the same contexts, and a ``level``
    bootstrap interval that resamples whole images (their contexts are not independent)."""
    random, oracle = random_and_oracle_rewards(table)
    span = oracle - random
    rows = np.arange(len(table))
    difference = (table[rows, choices] - table[rows, reference]) / (span if span > 0 else 1.0)
    images, group = np.unique(image_ids, return_inverse=True)
    per_image_sum = np.bincount(group, weights=difference, minlength=len(images))
    per_image_count = np.bincount(group, minlength=len(images)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(images), size=(rounds, len(images)))
    resampled = per_image_sum[draws].sum(axis=1) / per_image_count[draws].sum(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(difference.mean()), float(low), float(high)


def static_subset(train_table: np.ndarray) -> int:
    """The one subset of highest mean reward over the training contexts."""
    return int(np.argmax(train_table.mean(axis=0)))


def choice_summary(choices: np.ndarray, regimes: list[str] | None = None) -> dict[str, object]:
    """How per-sample the choices are: the most common subset, the share of contexts not on it,
    the number of distinct subsets and, with each context's image regime, the mutual information
    I(subset; regime) in bits beside its plug-in bias (Miller-Madow)."""
    counts = Counter(int(c) for c in choices)
    mode, mode_count = counts.most_common(1)[0]
    summary: dict[str, object] = {
        "most_common_subset": subset_name(mode),
        "share_off_most_common": 1.0 - mode_count / len(choices),
        "distinct_subsets": len(counts),
    }
    if regimes is not None:
        summary["subset_regime_mi_bits"] = mutual_information_bits(list(choices), regimes)
        summary["subset_regime_mi_bias_bits"] = (
            (len(counts) - 1) * (len(set(regimes)) - 1) / (2 * len(choices) * math.log(2))
        )
    return summary


@torch.no_grad()
def greedy_choices(module: LevelSelectionModule, observations: np.ndarray) -> np.ndarray:
    """[N] the module's most likely subset per observation."""
    logits = module.subset_logits(torch.as_tensor(observations, dtype=torch.float32))
    return logits.argmax(dim=-1).cpu().numpy()


@torch.no_grad()
def _mean_entropy(module: LevelSelectionModule, observations: np.ndarray) -> float:
    logits = module.subset_logits(torch.as_tensor(observations, dtype=torch.float32)).double()
    log_p = torch.log_softmax(logits, dim=-1)
    return float(-(log_p.exp() * log_p).sum(dim=-1).mean())


@dataclass
class HeldOutScorer:
    """Scores a policy on the held-out contexts of a bank split, beside static and predictor."""

    observations: np.ndarray
    """[N, obs_dim] of the held-out contexts."""
    table: np.ndarray
    """[N, 16] exact reward of every subset of every held-out context."""
    image_ids: np.ndarray
    regimes: list[str] | None
    """Each held-out context's image regime (embedded data), else None."""
    static_choice: int
    """The best static subset on the training contexts."""
    predictor_choices: np.ndarray
    """[N] the predictor's subset per held-out context."""
    predictor_kind: str
    """Which regression the predictor is (``ridge`` or ``mlp``)."""
    heldout_values: np.ndarray | None = None
    """[N, 4] the held-out contexts' ``v / s`` (what ``with_lam`` re-prices)."""
    predicted_values: np.ndarray | None = None
    """[N, 4] the predictor's ``v / s`` for them."""
    train_mean_values: np.ndarray | None = None
    """[4] the training contexts' mean ``v / s`` (the static subset at any λ)."""
    subset_costs: np.ndarray | None = None
    """[16] each subset's kd FLOPs over all levels'."""

    @classmethod
    def from_split(
        cls,
        split: BankSplit,
        lam: float,
        unit: float,
        regimes: dict[int, str] | None = None,
        seed: int = 0,
        hidden_sizes: Sequence[int] = (64, 64),
    ) -> HeldOutScorer:
        """Choose the static subset and fit the predictor on ``split.train``; score on
        ``split.heldout`` (rewards ``Σ_{l∈a} v_l / unit − λ · cost(a)``)."""
        train, heldout = split.train, split.heldout
        predictor = fit_value_predictor(
            train.observations,
            train.level_values / unit,
            train.image_ids,
            lam,
            train.subset_costs,
            hidden_sizes=hidden_sizes,
            seed=seed,
        )
        predicted = predictor.predict(heldout.observations)
        return cls(
            observations=heldout.observations,
            table=heldout.reward_table(lam, unit),
            image_ids=heldout.image_ids,
            regimes=None
            if regimes is None
            else [regimes.get(int(i), "unknown") for i in heldout.image_ids],
            static_choice=static_subset(train.reward_table(lam, unit)),
            predictor_choices=best_subsets(predicted, lam, heldout.subset_costs),
            predictor_kind=predictor.kind,
            heldout_values=heldout.level_values / unit,
            predicted_values=predicted,
            train_mean_values=train.level_values.mean(axis=0) / unit,
            subset_costs=heldout.subset_costs,
        )

    def with_lam(self, lam: float) -> HeldOutScorer:
        """The same contexts, predictor and values, priced at another ``λ`` (a budget's dual
        variable moves it between PPO iterations)."""
        if self.heldout_values is None or self.predicted_values is None:
            raise ValueError("with_lam needs a scorer made by from_split")
        costs = self.subset_costs
        prices = lam * costs[None, :]
        static = np.argmax(self.train_mean_values @ SUBSET_LEVELS.T - lam * costs)
        return dataclasses.replace(
            self,
            table=self.heldout_values @ SUBSET_LEVELS.T - prices,
            static_choice=int(static),
            predictor_choices=best_subsets(self.predicted_values, lam, costs),
        )

    def references(self) -> dict[str, object]:
        """The yardsticks: contexts, random and oracle rewards, static subset and its score,
        the predictor's score and choices."""
        random, oracle = random_and_oracle_rewards(self.table)
        static = np.full(len(self.table), self.static_choice)
        predictor = choice_summary(self.predictor_choices, self.regimes)
        return {
            "heldout_contexts": len(self.table),
            "heldout_images": len(np.unique(self.image_ids)),
            "random_reward": random,
            "oracle_reward": oracle,
            "static_subset": subset_name(self.static_choice),
            "static_score": normalised_score(self.table, static),
            "static_per_context_score": per_context_score(self.table, static),
            "predictor_score": normalised_score(self.table, self.predictor_choices),
            "predictor_per_context_score": per_context_score(self.table, self.predictor_choices),
            "predictor_kind": self.predictor_kind,
            **{f"predictor_{key}": value for key, value in predictor.items()},
        }

    def score(self, module: LevelSelectionModule) -> dict[str, object]:
        """The policy's held-out numbers: normalised score of its greedy choices, its mean
        entropy on the held-out observations, how per-sample its choices are, its agreement
        with the static subset, and score − static score with a 95% bootstrap interval."""
        choices = greedy_choices(module, self.observations)
        static = np.full(len(self.table), self.static_choice)
        difference, low, high = score_difference_interval(
            self.table, choices, static, self.image_ids
        )
        return {
            "heldout_score": normalised_score(self.table, choices),
            "heldout_per_context_score": per_context_score(self.table, choices),
            "heldout_static_score": normalised_score(self.table, static),
            "heldout_predictor_score": normalised_score(self.table, self.predictor_choices),
            "heldout_entropy": _mean_entropy(module, self.observations),
            "heldout_static_agreement": float((choices == self.static_choice).mean()),
            "heldout_score_minus_static": difference,
            "heldout_score_minus_static_low": low,
            "heldout_score_minus_static_high": high,
            **{
                f"heldout_{key}": value
                for key, value in choice_summary(choices, self.regimes).items()
            },
        }

    def greedy_choices(self, module: LevelSelectionModule) -> np.ndarray:
        """[N] the module's greedy subsets on the held-out contexts (for agreement across seeds)."""
        return greedy_choices(module, self.observations)
