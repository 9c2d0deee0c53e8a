"""Verification controls of an RL report: is the policy better *because* it chooses per sample?

Next to the policy, a report shows what it must beat at its own KD FLOPs (the shuffled-mask control,
random subsets, the scale rule, the best static subset at no more FLOPs) and how much its choices
depend on the image (mutual information between the chosen subset and the image's scale regime).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlpkd.levels import LEVELS
from rlpkd.report.mutual_information import mutual_information_bits

__all__ = [
    "SAME_FLOPS_TOLERANCE",
    "at_or_below_flops",
    "best_static_at_or_below",
    "subset_regime_information",
]


SAME_FLOPS_TOLERANCE = 1e-3
"""Relative kd_gflops margin within which a static subset counts as 'at' the policy's FLOPs: a
policy that uses all levels on all but 0.1% of its decisions is a hair cheaper than all levels,
and comparing it with the next cheaper subset (0.69 of the FLOPs) would be misleading. 0.1% is
below the smallest cost gap between two subsets of the default's FLOPs model (0.5%)."""


def at_or_below_flops(
    kd_gflops: float, budget_gflops: float, tolerance: float = SAME_FLOPS_TOLERANCE
) -> bool:
    """Whether a cost ``kd_gflops`` counts as at or below ``budget_gflops``: at most the budget
    times (1 + ``tolerance``), plus 1e-9 for rounding."""
    return kd_gflops <= budget_gflops * (1.0 + tolerance) + 1e-9


def best_static_at_or_below(
    rows: Sequence[dict[str, Any]],
    static_methods: Sequence[str],
    kd_gflops: float,
    tolerance: float = SAME_FLOPS_TOLERANCE,
) -> dict[str, Any] | None:
    """The row of highest mean AP among ``static_methods`` whose mean kd_gflops is at or below
    ``kd_gflops`` (``at_or_below_flops``); None if none is that cheap."""
    candidates = [
        row
        for row in rows
        if row["method"] in static_methods
        and at_or_below_flops(row["kd_gflops_mean"], kd_gflops, tolerance)
    ]
    return max(candidates, key=lambda row: row["AP_mean"], default=None)


def subset_regime_information(decisions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """I(chosen subset; image regime) in bits over the decision-log records that carry a regime.

    Also the regime entropy (the most it could be) and the Miller-Madow bias of the plug-in
    estimate, ``(|subsets|-1)(|regimes|-1) / (2 n ln 2)``, below which a value means nothing.
    """
    records = [record for record in decisions if "regime" in record]
    if not records:
        return {"mutual_information_bits": math.nan, "decisions": 0}
    subsets = [",".join(level for level in LEVELS if level in r["levels"]) for r in records]
    regimes = [record["regime"] for record in records]
    n = len(records)
    bias = (len(set(subsets)) - 1) * (len(set(regimes)) - 1) / (2 * n * math.log(2))
    return {
        "mutual_information_bits": mutual_information_bits(subsets, regimes),
        "regime_entropy_bits": mutual_information_bits(regimes, regimes),
        "plug_in_bias_bits": bias,
        "decisions": n,
    }
