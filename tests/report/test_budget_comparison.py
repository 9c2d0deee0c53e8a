"""The budget report: paired differences with a t interval, and a sentence only about controls at
the policy's cost."""

from __future__ import annotations

import math

import pytest

from rlpkd.report.budget_comparison import (
    budget_comparison,
    budget_report_lines,
    value_by_progress_sentence,
)
from rlpkd.report.paired_differences import paired_difference


def _run(method, seed, ap, gflops):
    return {"method": method, "seed": seed, "AP": ap, "kd_gflops": gflops}


def test_the_paired_difference_is_hand_computed():
    runs = [_run("p", s, ap, 0.5) for s, ap in enumerate([0.10, 0.12, 0.11])]
    runs += [_run("c", s, ap, 0.5) for s, ap in enumerate([0.09, 0.10, 0.11])]
    runs.append(_run("c", 7, 0.5, 0.5))  # a seed the policy did not run: not paired
    d = paired_difference(runs, "p", "c")
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(0.01)
    std = math.sqrt(((0.01 - 0.01) ** 2 + (0.02 - 0.01) ** 2 + (0.0 - 0.01) ** 2) / 2)
    assert d["std"] == pytest.approx(std)
    assert d["high"] - d["mean"] == pytest.approx(4.303 * std / math.sqrt(3))
    assert math.isnan(paired_difference(runs[:1] + runs[3:4], "p", "c")["low"])  # one pair


def test_the_sentence_names_only_controls_at_the_policys_cost():
    runs = []
    for seed, (p, cheap, same) in enumerate(
        [(0.10, 0.05, 0.08), (0.11, 0.06, 0.09), (0.10, 0.05, 0.08)]
    ):
        runs += [_run("rl-policy", seed, p, 0.5), _run("cheap", seed, cheap, 0.0)]
        runs += [_run("same@0.50", seed, same, 0.5)]
    kinds = {"rl-policy": "policy", "cheap": "static", "same@0.50": "random"}
    comparison = budget_comparison(runs, 0.5, "rl-policy", kinds, all_gflops=1.0)
    assert comparison["policy_holds_budget"]
    rows = {row["method"]: row for row in comparison["controls"]}
    assert rows["same@0.50"]["holds_policy_cost"] and not rows["cheap"]["holds_policy_cost"]
    sentence = budget_report_lines(comparison)[2]
    assert "above same@0.50" in sentence and "cheap" not in sentence
    assert "pace" not in sentence
    paced = budget_comparison(runs, 0.5, "rl-policy", kinds, 1.0, pace=[3.0, 1.0])
    assert paced["pace"] == [3.0, 1.0]
    assert "by the pace 0.75, 0.25 (rl.budget_pace)" in budget_report_lines(paced)[2]


def test_the_sentence_compares_with_all_levels_and_says_when_no_control_ran():
    runs = []
    for seed, (p, every) in enumerate([(0.10, 0.12), (0.11, 0.12), (0.10, 0.13)]):
        runs += [_run("rl-policy", seed, p, 0.65), _run("all", seed, every, 1.0)]
    kinds = {"rl-policy": "policy", "all": "reference"}
    sentence = budget_report_lines(budget_comparison(runs, 0.65, "rl-policy", kinds, 1.0))[2]
    assert "No control trained at its cost" in sentence
    assert "Against all levels: -2.0 AP points, 95% CI [" in sentence


def test_the_value_by_progress_sentence_names_each_bin_and_says_when_one_is_empty():
    rows = [
        {"progress": [0.0, 0.5], "contexts": 0, "mean_value": math.nan, "share_of_value": 0.0},
        {"progress": [0.5, 1.0], "contexts": 3, "mean_value": 0.25, "share_of_value": 1.0},
    ]
    text = value_by_progress_sentence(rows)
    assert "0–0.5: no contexts" in text
    assert "0.5–1: 0.25 (100%, 3 contexts)" in text
    assert "nan" not in text
    assert "`--set rl.budget_pace=[0.000, 1.000]`" in text
    unshared = value_by_progress_sentence([{**rows[1], "share_of_value": math.nan}])
    assert "0.5–1: 0.25 (3 contexts)" in unshared
    assert "budget_pace" not in unshared  # no shares (mixed signs): no pace to suggest
