"""At a KD budget: the policy against every control, paired by seed, and whether each held the
cost (issue 19)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rlpkd.report.paired_differences import paired_difference

__all__ = [
    "COST_TOLERANCE",
    "budget_comparison",
    "budget_report_lines",
    "phase2_budget_sentence",
    "value_by_progress_sentence",
]

COST_TOLERANCE = 0.02
"""A method holds a cost when its measured kd FLOPs are within this share of it."""


def _fraction(runs: list[dict[str, Any]], method: str, all_gflops: float) -> float:
    values = [r["kd_gflops"] / all_gflops for r in runs if r.get("method") == method]
    return statistics.fmean(values) if values else math.nan


def budget_comparison(
    runs: list[dict[str, Any]],
    budget: float,
    policy_method: str,
    kinds: Mapping[str, str],
    all_gflops: float,
    pace: Sequence[float] = (),
) -> dict[str, Any]:
    """The policy's measured cost against ``budget`` and, for every other method of ``runs``
    (``kinds``: method -> kind), its measured cost and ``policy − method`` AP paired by seed
    (``paired_difference``); ``pace``: the run's ``rl.budget_pace``, recorded as it is."""
    policy_fraction = _fraction(runs, policy_method, all_gflops)
    rows = []
    for method, kind in kinds.items():
        if method == policy_method:
            continue
        fraction = _fraction(runs, method, all_gflops)
        difference = paired_difference(runs, policy_method, method)
        rows.append(
            {
                "method": method,
                "kind": kind,
                "kd_fraction": fraction,
                "holds_policy_cost": bool(
                    abs(fraction - policy_fraction) <= COST_TOLERANCE * policy_fraction
                ),
                **{f"policy_minus_{k}": v for k, v in difference.items() if k != "method"},
            }
        )
    return {
        "budget": budget,
        "pace": [float(w) for w in pace],
        "policy_kd_fraction": policy_fraction,
        "policy_holds_budget": bool(abs(policy_fraction - budget) <= COST_TOLERANCE * budget),
        "controls": rows,
    }


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}" if math.isfinite(value) else "n/a"


def budget_report_lines(comparison: dict[str, Any]) -> list[str]:
    """Markdown: one sentence for the budget (held or not, and the policy against every control
    beyond or within its 95% interval), then a table of the paired differences."""
    budget, spent = comparison["budget"], comparison["policy_kd_fraction"]
    held = "held" if comparison["policy_holds_budget"] else "**not held**"
    # the sentence compares at the same cost: no reference, no static subset below the cost
    controls = [
        row
        for row in comparison["controls"]
        if row["kind"] != "reference" and row["holds_policy_cost"]
    ]
    above = [r["method"] for r in controls if r["policy_minus_low"] > 0]
    below = [r["method"] for r in controls if r["policy_minus_high"] < 0]
    level = [r["method"] for r in controls if r["method"] not in above + below]
    sentence = (
        f"**At budget {budget:.2f}** the policy spent {spent:.3f} of all-level kd FLOPs "
        f"({held}, ±{100 * COST_TOLERANCE:.0f}%). "
    )
    if comparison.get("pace"):
        shares = ", ".join(f"{w / sum(comparison['pace']):.2f}" for w in comparison["pace"])
        sentence += (
            f"It and every budgeted control spread the run's budget over equal stretches of "
            f"training by the pace {shares} (rl.budget_pace): the run holds it, its epochs "
            "do not. "
        )
    if controls:
        sentence += (
            "Against the controls at its cost, beyond the 95% interval of the paired difference, "
            f"it is above {', '.join(above) or 'no control'} and below "
            f"{', '.join(below) or 'no control'}; level with {', '.join(level) or 'none'}."
        )
    else:
        sentence += "No control trained at its cost (experiment.controls)."
    every_level = next((r for r in comparison["controls"] if r["method"] == "all"), None)
    if every_level is not None and every_level.get("policy_minus_n"):
        sentence += (
            f" Against all levels: {_signed(every_level['policy_minus_mean'])} AP points, 95% CI "
            f"[{_signed(every_level['policy_minus_low'])}, "
            f"{_signed(every_level['policy_minus_high'])}]."
        )
    lines = [
        "## At the budget",
        "",
        sentence,
        "",
        "| control | kind | kd FLOPs (fraction) | at the policy's cost | policy − control AP "
        "(points) | 95% CI | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison["controls"]:
        lines.append(
            f"| {row['method']} | {row['kind']} | {row['kd_fraction']:.3f} | "
            f"{'yes' if row['holds_policy_cost'] else 'no'} | "
            f"{_signed(row['policy_minus_mean'])} | [{_signed(row['policy_minus_low'])}, "
            f"{_signed(row['policy_minus_high'])}] | {row['policy_minus_n']} |"
        )
    return [*lines, ""]


def value_by_progress_sentence(rows: Sequence[Mapping[str, Any]]) -> str:
    """When the value signal says KD pays, from the decision bank's ``value_by_progress`` rows:
    each progress bin's mean all-level value (in the value reward's unit) and share."""

    def part(row: Mapping[str, Any]) -> str:
        span = f"{row['progress'][0]:g}–{row['progress'][1]:g}"
        if not row["contexts"]:
            return f"{span}: no contexts"
        share = row["share_of_value"]
        share_text = f"{100 * share:.0f}%, " if math.isfinite(share) else ""
        return f"{span}: {row['mean_value']:.2f} ({share_text}{row['contexts']} contexts)"

    text = (
        "**When the value signal says KD pays**: the decision bank's mean all-level value by "
        "training progress (1 = the value reward's unit, a typical all-level value; in brackets "
        f"the bin's share of the value at equal steps per bin): {'; '.join(map(part, rows))}. A "
        "budget held per batch spends the same in every bin; the temporal controls spend by "
        "progress alone."
    )
    shares = [row["share_of_value"] for row in rows]
    if all(math.isfinite(share) and share >= 0 for share in shares) and sum(shares) > 0:
        pace = ", ".join(f"{share:.3f}" for share in shares)
        text += f" To spend the budget by this value instead: `--set rl.budget_pace=[{pace}]`."
    return text


def phase2_budget_sentence(budget: Mapping[str, Any]) -> str:
    """What Phase 2 learnt at the budget (``policy_learning.json``'s ``budget`` record): the
    selected iteration's held-out budget score against the static mix's, and its expected cost
    and λ."""
    policy = float(budget.get("heldout_budget_score", math.nan))
    mix = float(budget.get("static_mix_budget_score", math.nan))
    if math.isfinite(policy) and math.isfinite(mix):
        verdict = "above" if policy > mix else "not above"
    else:
        verdict = "not comparable with"
    pair = "/".join(budget.get("static_pair", [])) or "n/a"
    policy_pc = float(budget.get("heldout_budget_per_context_score", math.nan))
    mix_pc = float(budget.get("static_mix_budget_per_context_score", math.nan))
    return (
        f"**At budget {budget['budget']:.2f}, Phase 2's policy is {verdict} the static mix** on "
        f"held-out contexts: budget score {policy:.3f} against {mix:.3f} for the mix of {pair} "
        f"(each allocation spends exactly the budget; random allocation 0, value-greedy 1); "
        f"per context (every context weighs the same) {policy_pc:.3f} against {mix_pc:.3f}. The "
        f"selected iteration's expected cost was {budget['selected_cost']:.3f} at λ "
        f"{budget['selected_lam']:.3f}."
    )
