"""What per-(sample, level) value matrices say about per-sample level choice, by image regime.

For a [samples x 4] matrix of values ``v_il`` (``rlpkd.distill.level_value``) and each sample's
scale regime: the two-way ANOVA's interaction share (``rlpkd.report.interaction_anova``) overall
and within each regime, the regime x level part of the interaction, the mean value of each level
by regime, and how often each level is a sample's best. Matrices of several student states are
pooled after dividing each by its own overall standard deviation (their scales differ by orders
of magnitude along a run, and a share is scale-free within one matrix but not across a stack).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlpkd.levels import LEVELS
from rlpkd.report.interaction_anova import group_by_level_sum_of_squares, interaction_anova

__all__ = ["normalise_by_std", "pool_value_matrices", "summarise_value_matrix"]


def normalise_by_std(values: np.ndarray) -> tuple[np.ndarray, float]:
    """``values / std(values)`` (population std over every entry) and that std; a constant
    matrix is returned unchanged with std 0."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std())
    return (values / std if std > 0 else values.copy()), std


def pool_value_matrices(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """The matrices, each divided by its own overall std, stacked along the samples."""
    if not matrices:
        raise ValueError("no value matrices to pool")
    return np.concatenate([normalise_by_std(m)[0] for m in matrices], axis=0)


def _fractions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).tolist() if total > 0 else [float("nan")] * len(counts)


def summarise_value_matrix(
    values: np.ndarray, regimes: Sequence[str], regime_order: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ANOVA shares, regime x level part and per-regime level statistics of one matrix.

    Args:
        values: [n, 4] values, columns in ``LEVELS`` order.
        regimes: the regime of each row.
        regime_order: regimes in report order (default: sorted).

    Returns:
        JSON-ready: ``num_samples``, ``std``, ``anova`` (``InteractionAnova.to_dict``),
        ``regime_x_level`` (its sum of squares and share of the total and of the interaction),
        ``by_regime`` (per regime: ``num_samples``, ``anova`` or None under 2 rows,
        ``mean`` [4], ``positive_share`` [4], ``best_level_share`` [4]) and ``mean`` [4].

    Raises:
        ValueError: a malformed matrix, or not one regime per row.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(list(regimes))
    if values.ndim != 2 or values.shape[1] != len(LEVELS) or labels.shape != (len(values),):
        raise ValueError(f"need [n, {len(LEVELS)}] values with one regime per row")
    anova = interaction_anova(values)
    ss_regime_level = group_by_level_sum_of_squares(values, labels)
    order = list(regime_order) if regime_order is not None else sorted(set(labels.tolist()))
    by_regime = {}
    for regime in order:
        rows = values[labels == regime]
        if len(rows) == 0:
            continue
        best = np.bincount(rows.argmax(axis=1), minlength=len(LEVELS))
        by_regime[regime] = {
            "num_samples": len(rows),
            "anova": interaction_anova(rows).to_dict() if len(rows) >= 2 else None,
            "mean": rows.mean(axis=0).tolist(),
            "positive_share": (rows > 0).mean(axis=0).tolist(),
            "best_level_share": _fractions(best),
        }

    def share(part: float, whole: float) -> float:
        return part / whole if whole > 0 else float("nan")

    return {
        "num_samples": len(values),
        "std": float(values.std()),
        "anova": anova.to_dict(),
        "regime_x_level": {
            "ss": ss_regime_level,
            "share_of_total": share(ss_regime_level, anova.ss_total),
            "share_of_interaction": share(ss_regime_level, anova.ss_interaction),
        },
        "mean": values.mean(axis=0).tolist(),
        "by_regime": by_regime,
    }
