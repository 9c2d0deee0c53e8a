"""Scores of a choice of subsets over contexts whose every subset's reward is known.

``normalised_score`` is the issue's measure, (mean reward of the choices − random's) / (oracle's −
random's); ``per_context_score`` averages each context's own normalised score, every context
weighing the same. Both take a reward table [N, 16] and the chosen subset per row.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["random_and_oracle_rewards", "normalised_score", "per_context_score"]


def random_and_oracle_rewards(table: np.ndarray) -> tuple[float, float]:
    """The mean reward of a uniformly random choice (each row's mean over its 16 subsets) and
    of the oracle (each row's best subset)."""
    return float(table.mean(axis=1).mean()), float(table.max(axis=1).mean())


def normalised_score(table: np.ndarray, choices: np.ndarray) -> float:
    """``(mean r(choices) − mean r(random)) / (mean r(oracle) − mean r(random))`` over the rows of
    ``table`` [N, 16] (NaN when every subset of every context earns the same)."""
    random, oracle = random_and_oracle_rewards(table)
    earned = float(table[np.arange(len(table)), choices].mean())
    return (earned - random) / (oracle - random) if oracle > random else math.nan


def per_context_score(table: np.ndarray, choices: np.ndarray) -> float:
    """The mean over contexts of each context's own normalised score,
    ``(r(choice) − mean r) / (max r − mean r)`` (contexts whose 16 rewards are equal count 0).

    Every context weighs the same, so the few contexts whose values are tens of times the unit
    (the value signal is heavy-tailed: on the default's bank the top 1% of contexts hold 17% of
    ``Σ |Σ_l v_l|``) cannot decide it, as they can the mean-based ``normalised_score``. The best
    subset of each context is the same under both; they differ in how contexts are weighed."""
    rows = np.arange(len(table))
    mean, best = table.mean(axis=1), table.max(axis=1)
    span = best - mean
    gained = np.where(span > 0, (table[rows, choices] - mean) / np.where(span > 0, span, 1.0), 0.0)
    return float(gained.mean())
