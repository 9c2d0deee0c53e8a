"""Over a study's budgets: each control's paired differences pooled across budgets and seeds.

Each budget's comparison (``rlpkd.report.budget_comparison``) pairs the policy with a control by
seed. A control trained at several budgets (``random-samples@0.30``, ``random-samples@0.50``, ...)
gives one pair per (budget, seed); pooled, they answer "is the policy above this control at the
same cost, on average over the budgets studied" with more pairs than any one budget has. Two
95% t intervals, because the pairs of one seed share its initialisation and data order:

- over the pairs, as if they were one sample (the spread between budgets counts as noise);
- over the seeds, each seed's mean over its budgets (robust to pairs of a seed being alike, with
  fewer degrees of freedom).

A control is above (below) the policy only when both intervals exclude 0. Each is a 95% interval
per control, not corrected for the number of controls compared.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from rlpkd.report.paired_differences import difference_interval

__all__ = ["control_family", "pooled_over_budgets", "pooled_budget_lines"]


def control_family(method: str) -> str:
    """A control's name without its cost tag: ``random-samples@0.50`` -> ``random-samples``."""
    return method.split("@", 1)[0]


def pooled_over_budgets(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per control family, the policy − control differences of every budget at which that
    control held the policy's cost, pooled over the pairs and over the seeds (module
    docstring); families in first-seen order."""
    pooled: dict[str, dict[str, Any]] = {}
    for comparison in comparisons:
        for row in comparison["controls"]:
            if row["kind"] == "reference" or not row["holds_policy_cost"]:
                continue
            family = pooled.setdefault(
                control_family(row["method"]),
                {"kind": row["kind"], "budgets": [], "pairs": [], "differences": []},
            )
            family["budgets"].append(comparison["budget"])
            family["pairs"] += [(comparison["budget"], seed) for seed in row["policy_minus_seeds"]]
            family["differences"] += row["policy_minus_differences"]
    rows = []
    for name, family in pooled.items():
        by_seed: dict[int, list[float]] = {}
        for (_, seed), difference in zip(family["pairs"], family["differences"], strict=True):
            by_seed.setdefault(seed, []).append(difference)
        seed_means = [statistics.fmean(by_seed[seed]) for seed in sorted(by_seed)]
        over_seeds = difference_interval(seed_means)
        rows.append(
            {
                "control": name,
                "kind": family["kind"],
                "budgets": family["budgets"],
                "pairs": family["pairs"],
                **difference_interval(family["differences"]),
                "seeds": sorted(by_seed),
                "seed_means": seed_means,
                "seed_low": over_seeds["low"],
                "seed_high": over_seeds["high"],
            }
        )
    return rows


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}" if math.isfinite(value) else "n/a"


def pooled_budget_lines(pooled: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown: one sentence (above / below / level: beyond both pooled 95% intervals or not)
    and the table of pooled differences; nothing when no control ran at two budgets or more."""
    rows = [row for row in pooled if len(row["budgets"]) > 1 and row["n"] > 1]
    if not rows:
        return []
    above = [r["control"] for r in rows if r["low"] > 0 and r["seed_low"] > 0]
    below = [r["control"] for r in rows if r["high"] < 0 and r["seed_high"] < 0]
    level = [r["control"] for r in rows if r["control"] not in above + below]
    lines = [
        "## Over the budgets",
        "",
        "Each control's policy − control differences pooled over every (budget, seed) pair at "
        "which it held the policy's cost, with a 95% t interval over the pairs and one over the "
        "seeds (each seed's mean over its budgets). Beyond both intervals, the policy is above "
        f"{', '.join(above) or 'no control'} and below {', '.join(below) or 'no control'}; "
        f"level with {', '.join(level) or 'none'}. One interval per control, not corrected for "
        f"the {len(rows)} compared.",
        "",
        "| control | kind | budgets | pairs | policy − control AP (points) | 95% CI over pairs "
        "| 95% CI over seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        budgets = ", ".join(f"{b:.2f}" for b in row["budgets"])
        lines.append(
            f"| {row['control']} | {row['kind']} | {budgets} | {row['n']} | "
            f"{_signed(row['mean'])} | [{_signed(row['low'])}, {_signed(row['high'])}] | "
            f"[{_signed(row['seed_low'])}, {_signed(row['seed_high'])}] |"
        )
    return [*lines, ""]
