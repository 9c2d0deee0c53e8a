"""Paired differences between two methods over the seeds both ran, with a t interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["t_quantile_975", "difference_interval", "paired_difference"]

_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""The 0.975 quantile of Student's t for 1..30 degrees of freedom."""


_Z_975 = 1.959963984540054
"""The standard normal's 0.975 quantile."""


def t_quantile_975(degrees_of_freedom: int) -> float:
    """Student's t 0.975 quantile (two-sided 95%): the table up to 30 degrees of freedom, beyond
    it the Cornish-Fisher expansion in 1/ν (Abramowitz & Stegun 26.7.5; within 1e-4 of the
    exact quantile from 31 on); NaN below 1."""
    if degrees_of_freedom < 1:
        return math.nan
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, nu = _Z_975, float(degrees_of_freedom)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / nu + g2 / nu**2 + g3 / nu**3


def difference_interval(differences: Sequence[float]) -> dict[str, Any]:
    """The paired ``differences``' count, mean, sample std and the 95% t interval of the mean
    (NaN with fewer than 2, and wherever a difference is not finite)."""
    values = [float(d) for d in differences]
    n = len(values)
    finite = all(math.isfinite(v) for v in values)
    mean = statistics.fmean(values) if n and finite else math.nan
    std = statistics.stdev(values) if n > 1 and finite else math.nan
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "n": n,
        "differences": values,
        "mean": mean,
        "std": std,
        "low": mean - half,
        "high": mean + half,
    }


def paired_difference(
    runs: Iterable[dict[str, Any]], method: str, reference: str, metric: str = "AP"
) -> dict[str, Any]:
    """``method − reference`` on ``metric`` over the seeds both ran: mean, sample std, the 95%
    t interval of the mean (NaN with fewer than 2 pairs), the seeds and the per-seed values."""
    by_seed: dict[str, dict[int, float]] = {method: {}, reference: {}}
    for run in runs:
        if run.get("method") in by_seed and math.isfinite(float(run.get(metric, math.nan))):
            by_seed[run["method"]][int(run["seed"])] = float(run[metric])
    seeds = sorted(by_seed[method].keys() & by_seed[reference].keys())
    differences = [by_seed[method][s] - by_seed[reference][s] for s in seeds]
    interval = difference_interval(differences)
    return {
        "method": method,
        "reference": reference,
        "metric": metric,
        "n": interval.pop("n"),
        "seeds": seeds,
        **interval,
    }
