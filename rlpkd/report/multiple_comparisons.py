"""Tests of paired differences against 0 for a family of comparisons: the two-sided one-sample
t test's p-value, and Holm's step-down correction of a family's p-values (Holm 1979, "A simple
sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70), which holds the
chance of any false "above" or "below" among the family at the level asked for."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["t_test_p_value", "holm_adjusted"]


def t_test_p_value(differences: Sequence[float]) -> float:
    """The two-sided p-value of Student's one-sample t test that the mean of ``differences`` is
    0 (what ``scipy.stats.ttest_1samp`` gives); NaN with fewer than 2, or a difference that is
    not finite."""
    values = [float(d) for d in differences]
    n = len(values)
    if n < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    mean, std = statistics.fmean(values), statistics.stdev(values)
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy.special import stdtr  # here, not at import: every script imports the report

    t = abs(mean) / (std / math.sqrt(n))
    return float(2 * stdtr(n - 1, -t))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest of m becomes the largest of
    ``min(1, (m - j + 1) * p_(j))`` over j <= i. One is below a level α exactly when Holm's
    procedure at α rejects it. NaN stays NaN and does not count in m."""
    finite = sorted((p, index) for index, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[index] = running
    return adjusted
