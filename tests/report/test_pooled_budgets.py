"""Over the budgets: each control's paired differences pooled across (budget, seed) pairs."""

from __future__ import annotations

import math
import statistics

import pytest

from rlpkd.report.budget_comparison import budget_comparison
from rlpkd.report.multiple_comparisons import holm_adjusted, t_test_p_value
from rlpkd.report.paired_differences import difference_interval, t_quantile_975
from rlpkd.report.pooled_budgets import control_family, pooled_budget_lines, pooled_over_budgets


def _run(method, seed, ap, gflops):
    return {"method": method, "seed": seed, "AP": ap, "kd_gflops": gflops}


def _comparison(budget, policy_aps, control_aps, off_cost_aps=None):
    """A budget's comparison: the policy and ``random@b`` at the budget, ``all`` as reference,
    and (when given) ``cheap@b`` that spends a tenth of the budget."""
    tag = f"{budget:.2f}"
    runs, kinds = [], {"rl-policy": "policy", f"random@{tag}": "random", "all": "reference"}
    for seed, (p, c) in enumerate(zip(policy_aps, control_aps, strict=True)):
        runs += [_run("rl-policy", seed, p, budget), _run(f"random@{tag}", seed, c, budget)]
        runs.append(_run("all", seed, 0.2, 1.0))
    if off_cost_aps is not None:
        kinds[f"cheap@{tag}"] = "heuristic"
        runs += [_run(f"cheap@{tag}", s, ap, budget / 10) for s, ap in enumerate(off_cost_aps)]
    return budget_comparison(runs, budget, "rl-policy", kinds, all_gflops=1.0)


def test_a_control_family_drops_only_the_cost_tag():
    assert control_family("random-samples@0.50") == "random-samples"
    assert control_family("static-mix") == "static-mix"


def test_pairs_of_every_budget_are_pooled_and_the_interval_is_hand_computed():
    low = _comparison(0.3, [0.10, 0.11, 0.12], [0.09, 0.11, 0.10], off_cost_aps=[0, 0, 0])
    high = _comparison(0.5, [0.13, 0.12, 0.14], [0.12, 0.13, 0.12])
    pooled = {row["control"]: row for row in pooled_over_budgets([low, high])}
    assert set(pooled) == {"random"}  # no reference, no control off the policy's cost
    row = pooled["random"]
    differences = [0.01, 0.0, 0.02, 0.01, -0.01, 0.02]
    assert row["n"] == 6 and row["budgets"] == [0.3, 0.5]
    assert row["pairs"] == [(0.3, 0), (0.3, 1), (0.3, 2), (0.5, 0), (0.5, 1), (0.5, 2)]
    assert row["differences"] == pytest.approx(differences)
    assert row["mean"] == pytest.approx(statistics.fmean(differences))
    half = t_quantile_975(5) * statistics.stdev(differences) / math.sqrt(6)
    assert row["high"] - row["mean"] == pytest.approx(half)
    # over the seeds: each seed's mean over the two budgets, then a t interval with 2 d.o.f.
    seed_means = [0.01, -0.005, 0.02]
    assert row["seeds"] == [0, 1, 2] and row["seed_means"] == pytest.approx(seed_means)
    half = t_quantile_975(2) * statistics.stdev(seed_means) / math.sqrt(3)
    assert row["seed_high"] == pytest.approx(statistics.fmean(seed_means) + half)


def test_the_markdown_says_above_level_or_below_and_skips_one_budget_controls():
    above = pooled_over_budgets(
        [_comparison(0.3, [0.11, 0.12], [0.09, 0.11]), _comparison(0.5, [0.13, 0.14], [0.12, 0.12])]
    )
    text = "\n".join(pooled_budget_lines(above))
    assert "the policy is above random and below no control; level with none." in text
    assert "| random | random | 0.30, 0.50 | 4 | +1.50 |" in text
    below = pooled_over_budgets(
        [_comparison(0.3, [0.09, 0.10], [0.11, 0.11]), _comparison(0.5, [0.1, 0.1], [0.12, 0.13])]
    )
    assert "above no control and below random;" in "\n".join(pooled_budget_lines(below))
    # beyond the interval over pairs, not over seeds (seed 3 is below at every budget): level
    mixed = pooled_over_budgets(
        [
            _comparison(b, [0.13, 0.13, 0.13, 0.10], [0.10, 0.10, 0.10, 0.11])
            for b in (0.3, 0.5, 0.7)
        ]
    )
    assert mixed[0]["low"] > 0 > mixed[0]["seed_low"]
    assert "level with random." in "\n".join(pooled_budget_lines(mixed))
    assert (
        pooled_budget_lines(pooled_over_budgets([_comparison(0.5, [0.1, 0.1], [0.1, 0.2])])) == []
    )


def test_the_interval_over_seeds_keeps_the_seeds_present_at_every_budget():
    low = _comparison(0.3, [0.10, 0.10, 0.10, 0.10], [0.10, 0.10, 0.10, 0.10])
    high = _comparison(0.7, [0.12, 0.12, 0.12], [0.10, 0.10, 0.10])  # seed 3 missing
    (row,) = pooled_over_budgets([low, high])
    assert row["n"] == 7 and row["seeds"] == [0, 1, 2] and row["seeds_dropped"] == [3]
    assert row["seed_means"] == pytest.approx([0.01, 0.01, 0.01])  # no spread made by seed 3
    assert "| 0, 1, 2 (not at every budget: 3) |" in "\n".join(pooled_budget_lines([row]))


def test_one_budgets_run_given_twice_is_an_error():
    twice = _comparison(0.5, [0.1, 0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="random at budget 0.5, seed 0 comes twice"):
        pooled_over_budgets([twice, twice])


def test_a_control_with_one_seed_gets_no_verdict():
    rows = pooled_over_budgets([_comparison(0.3, [0.12], [0.10]), _comparison(0.5, [0.13], [0.10])])
    assert rows[0]["n"] == 2 and math.isnan(rows[0]["seed_low"])
    text = "\n".join(pooled_budget_lines(rows))
    assert "level with none. Fewer than 2 seeds at every budget, no verdict: random." in text


def test_a_difference_that_is_not_finite_gives_nan_not_an_error():
    interval = difference_interval([0.01, math.nan, 0.02])
    assert interval["n"] == 3 and math.isnan(interval["mean"]) and math.isnan(interval["low"])


def test_the_t_quantile_beyond_the_table_follows_students_t():
    # Student's t 0.975 quantiles (any table): 31 -> 2.0395, 40 -> 2.0211, 120 -> 1.9799
    assert t_quantile_975(30) == 2.042
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)
    assert t_quantile_975(40) == pytest.approx(2.0211, abs=1e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    assert t_quantile_975(10**6) == pytest.approx(1.95997, abs=1e-4)


def _comparison_of_controls(budget, policy_aps, control_ap, names):
    """A budget's comparison with one control per name, each at the policy's cost with
    ``control_ap`` on every seed."""
    tag = f"{budget:.2f}"
    runs, kinds = [], {"rl-policy": "policy", "all": "reference"}
    for seed, ap in enumerate(policy_aps):
        runs += [_run("rl-policy", seed, ap, budget), _run("all", seed, 0.2, 1.0)]
        for name in names:
            kinds[f"{name}@{tag}"] = "random"
            runs.append(_run(f"{name}@{tag}", seed, control_ap, budget))
    return budget_comparison(runs, budget, "rl-policy", kinds, all_gflops=1.0)


def test_holm_over_the_controls_turns_a_lone_above_into_level_among_three():
    # differences +2, +1, +3 points at 0.3 and +1, +2, 0 at 0.5: p = 0.0172, both intervals > 0
    def pooled(names):
        return pooled_over_budgets(
            [
                _comparison_of_controls(0.3, [0.12, 0.11, 0.13], 0.10, names),
                _comparison_of_controls(0.5, [0.11, 0.12, 0.10], 0.10, names),
            ]
        )

    (alone,) = pooled(["a"])
    assert alone["p"] == pytest.approx(0.01722, abs=1e-5) and alone["holm_p"] == alone["p"]
    assert alone["low"] > 0 and alone["seed_low"] > 0
    assert "the policy is above a and below no control;" in "\n".join(pooled_budget_lines([alone]))
    three = pooled(["a", "b", "c"])
    assert [row["holm_p"] for row in three] == pytest.approx([3 * alone["p"]] * 3)
    text = "\n".join(pooled_budget_lines(three))
    assert "above no control and below no control; level with a, b, c." in text
    assert "| 0.017 (0.052) |" in text


def test_the_t_test_p_value_and_holms_adjustment_are_hand_computed():
    # mean 2, std 1, n 3: t = 2 * sqrt(3) = 3.4641 on 2 d.o.f., two-sided p = 0.07418
    assert t_test_p_value([1.0, 2.0, 3.0]) == pytest.approx(0.07418, abs=1e-5)
    assert t_test_p_value([-1.0, -2.0, -3.0]) == pytest.approx(0.07418, abs=1e-5)
    assert t_test_p_value([0.5, 0.5]) == 0.0 and t_test_p_value([0.0, 0.0]) == 1.0
    assert math.isnan(t_test_p_value([1.0])) and math.isnan(t_test_p_value([1.0, math.nan]))
    # sorted 0.005, 0.01, 0.03, 0.04 of m = 4: 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 0.04)
    adjusted = holm_adjusted([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adjusted[:3] + adjusted[4:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3]) and holm_adjusted([0.6, 0.5]) == [1.0, 1.0]
