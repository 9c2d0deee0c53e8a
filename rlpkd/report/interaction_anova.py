"""How much of a [samples x levels] value matrix is sample x level interaction: two-way ANOVA.

Two-way analysis of variance without replication (one observation per cell; Fisher, *Statistical
Methods for Research Workers*, 1925; Montgomery, *Design and Analysis of Experiments*, §5.3.7
"one observation per cell"): for ``x_il`` with grand mean ``m``, row (sample) means ``r_i`` and
column (level) means ``c_l``,

    SS_total       = Σ_il (x_il − m)²
    SS_sample      = L · Σ_i (r_i − m)²
    SS_level       = n · Σ_l (c_l − m)²
    SS_interaction = Σ_il (x_il − r_i − c_l + m)² = SS_total − SS_sample − SS_level

With one observation per cell the interaction cannot be told apart from noise: it is the residual
of the additive model ``x_il ≈ m + a_i + b_l``. Its share ``SS_interaction / SS_total`` is the part
of the variance that a per-sample level choice can exploit: if it is 0, every sample ranks the
levels the same way and one static subset is as good as any per-sample policy.

With a grouping of the samples (e.g. each image's scale regime), the interaction splits further
into a *group x level* part — the residuals' group means, ``Σ_g n_g Σ_l ē_gl²`` — which a policy
that knows only the group can exploit, and the within-group sample x level rest (the
samples-nested-in-groups decomposition of a split-plot design, Montgomery §14.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["InteractionAnova", "interaction_anova", "group_by_level_sum_of_squares"]


@dataclass(frozen=True)
class InteractionAnova:
    """The sums of squares of a two-way ANOVA without replication.

    Attributes:
        num_samples: rows n.
        num_levels: columns L.
        ss_total: Σ (x − m)².
        ss_sample: the rows' main effect.
        ss_level: the columns' main effect.
        ss_interaction: the residual of the additive model (sample x level interaction).
    """

    num_samples: int
    num_levels: int
    ss_total: float
    ss_sample: float
    ss_level: float
    ss_interaction: float

    @property
    def interaction_share(self) -> float:
        """``ss_interaction / ss_total`` in [0, 1]; NaN for a constant matrix."""
        return self.ss_interaction / self.ss_total if self.ss_total > 0 else float("nan")

    @property
    def sample_share(self) -> float:
        """``ss_sample / ss_total``; NaN for a constant matrix."""
        return self.ss_sample / self.ss_total if self.ss_total > 0 else float("nan")

    @property
    def level_share(self) -> float:
        """``ss_level / ss_total``; NaN for a constant matrix."""
        return self.ss_level / self.ss_total if self.ss_total > 0 else float("nan")

    def to_dict(self) -> dict[str, float]:
        """The sums of squares and the three shares, JSON-ready."""
        return {
            **asdict(self),
            "interaction_share": self.interaction_share,
            "sample_share": self.sample_share,
            "level_share": self.level_share,
        }


def _matrix(values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 2:
        raise ValueError(f"need a [samples, levels] matrix of at least 2 x 2, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("the value matrix holds NaN or infinite entries")
    return matrix


def _interaction_residuals(matrix: np.ndarray) -> np.ndarray:
    """``x_il − r_i − c_l + m``."""
    return (
        matrix
        - matrix.mean(axis=1, keepdims=True)
        - matrix.mean(axis=0, keepdims=True)
        + matrix.mean()
    )


def interaction_anova(values: np.ndarray | Sequence[Sequence[float]]) -> InteractionAnova:
    """Two-way ANOVA without replication of a [samples, levels] matrix (see module doc).

    Raises:
        ValueError: not a finite matrix of at least 2 x 2.
    """
    matrix = _matrix(values)
    n, num_levels = matrix.shape
    grand = matrix.mean()
    ss_total = float(((matrix - grand) ** 2).sum())
    ss_sample = float(num_levels * ((matrix.mean(axis=1) - grand) ** 2).sum())
    ss_level = float(n * ((matrix.mean(axis=0) - grand) ** 2).sum())
    ss_interaction = float((_interaction_residuals(matrix) ** 2).sum())
    return InteractionAnova(n, num_levels, ss_total, ss_sample, ss_level, ss_interaction)


def group_by_level_sum_of_squares(
    values: np.ndarray | Sequence[Sequence[float]], groups: Sequence[str]
) -> float:
    """The group x level part of the interaction: ``Σ_g n_g Σ_l ē_gl²``, ``ē_gl`` the mean over
    the group's samples of the interaction residual ``x_il − r_i − c_l + m``.

    It lies in [0, SS_interaction]; the rest of SS_interaction is sample x level interaction
    within the groups.

    Raises:
        ValueError: not a finite matrix of at least 2 x 2, or one group label per row missing.
    """
    matrix = _matrix(values)
    labels = np.asarray(list(groups))
    if labels.shape != (matrix.shape[0],):
        raise ValueError(f"need one group per row ({matrix.shape[0]}), got {labels.shape}")
    residuals = _interaction_residuals(matrix)
    total = 0.0
    for group in np.unique(labels):
        rows = residuals[labels == group]
        total += len(rows) * float((rows.mean(axis=0) ** 2).sum())
    return total
