"""Over a study's budgets: each control's paired differences pooled across budgets and seeds.

Each budget's comparison (``rlpkd.report.budget_comparison``) pairs the policy with a control by
seed. A control trained at several budgets (``random-samples@0.30``, ``random-samples@0.50``, ...)
gives one pair per (budget, seed); pooled, they answer "is the policy above this control at the
same cost, on average over the budgets studied" with more pairs than any one budget has. Two
95% t intervals, because the pairs of one seed share its initialisation and data order:

- over the pairs, as if they were one sample (the spread between budgets counts as noise);
- over the seeds, each seed's mean over the budgets, for the seeds present at all of them
  (robust to pairs of a seed being alike, with fewer degrees of freedom).

The policy is above (below) a control only when both intervals exclude 0 and the pairs' t test
stays below 0.05 after Holm's correction over the controls pooled at two budgets or more
(``rlpkd.report.multiple_comparisons``): one study compares the policy with about ten controls,
and at 95% each one alone would call one of twenty level controls above or below by chance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from rlpkd.report.multiple_comparisons import holm_adjusted, t_test_p_value
from rlpkd.report.paired_differences import difference_interval

__all__ = ["control_family", "pooled_over_budgets", "pooled_budget_lines"]


def control_family(method: str) -> str:
    """A control's name without its cost tag: ``random-samples@0.50`` -> ``random-samples``."""
    return method.split("@", 1)[0]


def pooled_over_budgets(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per control family, the policy − control differences of every budget at which that
    control held the policy's cost, pooled over the pairs and over the seeds (module
    docstring); families in first-seen order. The interval over seeds uses the seeds present at
    every one of the family's budgets (``seeds``; the others are in ``seeds_dropped``), so each
    seed's mean is over the same budgets. ``p``: the pairs' two-sided t test; ``holm_p``: ``p``
    after Holm's correction over the families pooled at two budgets or more (NaN for the others).

    Raises:
        ValueError: a (budget, seed) pair of a control comes twice (one budget's run given
            twice).
    """
    pooled: dict[str, dict[str, Any]] = {}
    for comparison in comparisons:
        budget = comparison["budget"]
        for row in comparison["controls"]:
            if row["kind"] == "reference" or not row["holds_policy_cost"]:
                continue
            name = control_family(row["method"])
            family = pooled.setdefault(name, {"kind": row["kind"], "by_pair": {}})
            for seed, difference in zip(
                row["policy_minus_seeds"], row["policy_minus_differences"], strict=True
            ):
                if (budget, seed) in family["by_pair"]:
                    raise ValueError(
                        f"pooled_over_budgets: {name} at budget {budget:g}, seed {seed} comes "
                        "twice (the same budget's run given twice?)"
                    )
                family["by_pair"][(budget, seed)] = difference
    rows = [_pooled_row(name, family["kind"], family["by_pair"]) for name, family in pooled.items()]
    tested = [row["p"] if len(row["budgets"]) > 1 else math.nan for row in rows]
    for row, holm_p in zip(rows, holm_adjusted(tested), strict=True):
        row["holm_p"] = holm_p
    return rows


def _pooled_row(name: str, kind: str, by_pair: dict[tuple[float, int], float]) -> dict[str, Any]:
    budgets = list(dict.fromkeys(budget for budget, _ in by_pair))
    all_seeds = sorted({seed for _, seed in by_pair})
    seeds = [s for s in all_seeds if all((b, s) in by_pair for b in budgets)]
    seed_means = [statistics.fmean(by_pair[(b, s)] for b in budgets) for s in seeds]
    over_seeds = difference_interval(seed_means)
    return {
        "control": name,
        "kind": kind,
        "budgets": budgets,
        "pairs": list(by_pair),
        **difference_interval(list(by_pair.values())),
        "p": t_test_p_value(list(by_pair.values())),
        "seeds": seeds,
        "seeds_dropped": [s for s in all_seeds if s not in seeds],
        "seed_means": seed_means,
        "seed_low": over_seeds["low"],
        "seed_high": over_seeds["high"],
    }


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}" if math.isfinite(value) else "n/a"


def _p_text(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def pooled_budget_lines(pooled: Sequence[dict[str, Any]], level: float = 0.05) -> list[str]:
    """Markdown: one sentence (above / below / level: beyond both pooled 95% intervals and below
    ``level`` after Holm's correction, or not; untested: fewer than 2 seeds at every budget) and
    the table of pooled differences; nothing when no control ran at two budgets or more."""
    rows = [row for row in pooled if len(row["budgets"]) > 1 and row["n"] > 1]
    if not rows:
        return []
    bounds = ("low", "high", "seed_low", "seed_high")
    tested = [r for r in rows if all(math.isfinite(r[k]) for k in bounds)]
    significant = [r for r in tested if math.isfinite(r["holm_p"]) and r["holm_p"] < level]
    above = [r["control"] for r in significant if r["low"] > 0 and r["seed_low"] > 0]
    below = [r["control"] for r in significant if r["high"] < 0 and r["seed_high"] < 0]
    level_with = [r["control"] for r in tested if r["control"] not in above + below]
    untested = [r["control"] for r in rows if r not in tested]
    sentence = (
        "Each control's policy − control differences pooled over every (budget, seed) pair at "
        "which it held the policy's cost, with a 95% t interval over the pairs and one over the "
        "seeds (each seed's mean over the budgets, for the seeds present at all of them), and the "
        f"pairs' t test corrected by Holm over the {len(rows)} controls. Beyond both intervals "
        f"and with a corrected p below {level:g}, the policy is above "
        f"{', '.join(above) or 'no control'} and below {', '.join(below) or 'no control'}; level "
        f"with {', '.join(level_with) or 'none'}."
    )
    if untested:
        sentence += f" Fewer than 2 seeds at every budget, no verdict: {', '.join(untested)}."
    lines = [
        "## Over the budgets",
        "",
        sentence,
        "",
        "| control | kind | budgets | pairs | policy − control AP (points) | 95% CI over pairs "
        "| 95% CI over seeds | p (Holm) | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        budgets = ", ".join(f"{b:.2f}" for b in row["budgets"])
        seeds = ", ".join(map(str, row["seeds"])) or "none"
        if row["seeds_dropped"]:
            seeds += f" (not at every budget: {', '.join(map(str, row['seeds_dropped']))})"
        lines.append(
            f"| {row['control']} | {row['kind']} | {budgets} | {row['n']} | "
            f"{_signed(row['mean'])} | [{_signed(row['low'])}, {_signed(row['high'])}] | "
            f"[{_signed(row['seed_low'])}, {_signed(row['seed_high'])}] | "
            f"{_p_text(row['p'])} ({_p_text(row['holm_p'])}) | {seeds} |"
        )
    return [*lines, ""]
