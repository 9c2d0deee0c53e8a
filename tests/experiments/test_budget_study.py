"""The budget study: one train_rl per budget, budget-free work shared, a paired table and a plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.budget_study import comparison_from_students, run_budget_study
from rlpkd.report.pooled_budgets import pooled_over_budgets
from tests.conftest import one_error_line, run_script, tiny_rl_config


@pytest.mark.slow
def test_a_study_of_two_budgets_shares_the_teacher_and_pairs_every_control(tiny_config):
    config = tiny_rl_config(tiny_config, decisions=32)
    # two controls keep the suite short; every control at a budget: test_budget_run.py
    experiment = dataclasses.replace(
        config.experiment, seeds=[0, 1], controls=["random-subsets", "shuffled"]
    )
    config = dataclasses.replace(config, experiment=experiment)
    record = run_budget_study(config, [0.4, 0.7], static_specs=["P3", "P4,P3", "none", "all"])
    out = Path(config.runtime.out)
    first, second = out / "budget-0.40", out / "budget-0.70"
    # the teacher and the all-level students were made once
    teacher = (first / "checkpoints" / "teacher.pt").stat()
    assert (second / "checkpoints" / "teacher.pt").stat().st_ino == teacher.st_ino
    assert (second / "students" / "all-seed1" / "metrics.json").samefile(
        first / "students" / "all-seed1" / "metrics.json"
    )
    assert [entry["budget"] for entry in record["budgets"]] == [0.4, 0.7]
    for entry in record["budgets"]:
        controls = entry["comparison"]["controls"]
        assert all(row["policy_minus_n"] == 2 for row in controls), entry["budget"]
    # the static front: P3 and P3,P4 trained once in the first run, none and all reused there
    static = record["static_front"]
    assert [row["method"] for row in static["rows"]] == ["none", "static:P3", "static:P3,P4", "all"]
    assert all(row["n"] == 2 for row in static["rows"])
    assert (first / "students" / "static:P3,P4-seed1" / "metrics.json").is_file()
    assert not (second / "students" / "static:P3-seed0").exists()
    # no KD and all levels are Phase 3's students, not trained again (written before the report)
    report_time = (first / "report.md").stat().st_mtime_ns
    for method in ("none", "all"):
        metrics = first / "students" / f"{method}-seed1" / "metrics.json"
        assert metrics.stat().st_mtime_ns < report_time, method
    assert "none" in static["front"]  # nothing is cheaper than no KD
    fractions = [row["kd_fraction_mean"] for row in static["rows"]]
    assert fractions[0] == 0 and fractions[-1] == pytest.approx(1.0)
    for name in static["front"]:  # the front: no row is as good for less, or better for as much
        point = next(row for row in static["rows"] if row["method"] == name)
        assert not any(
            row["AP_mean"] >= point["AP_mean"]
            and row["kd_gflops_mean"] <= point["kd_gflops_mean"]
            and (row["AP_mean"], row["kd_gflops_mean"])
            != (point["AP_mean"], point["kd_gflops_mean"])
            for row in static["rows"]
        ), name
    text = (out / "budget_study.md").read_text()
    assert "**At budget 0.40**" in text and "**At budget 0.70**" in text
    assert "| static:P3,P4 |" in text or "| **static:P3,P4** |" in text
    assert "best static subset at or below the policy's cost" in text
    # each control at both budgets, pooled over its 2 x 2 (budget, seed) pairs
    pooled = {row["control"]: row for row in record["pooled"]}
    assert pooled["random-subsets"]["budgets"] == [0.4, 0.7]
    assert pooled["random-subsets"]["n"] == 4
    assert "## Over the budgets" in text and "| random-subsets | random | 0.40, 0.70 | 4 |" in text
    # rebuilt from the students on disk, each budget's comparison pools to the same pairs
    rebuilt = pooled_over_budgets([comparison_from_students(run) for run in (first, second)])
    assert [(r["control"], r["pairs"], r["differences"]) for r in rebuilt] == [
        (r["control"], r["pairs"], r["differences"]) for r in record["pooled"]
    ]
    # each budget's report says when the value signal says KD pays
    assert "When the value signal says KD pays" in (first / "report.md").read_text()
    assert (out / "budget_study.png").stat().st_size > 0


def test_a_budget_outside_zero_one_is_one_line(tmp_path):
    out = tmp_path / "study"
    result = run_script("scripts/budget_study.py", "--debug", "--budgets", "1.5", "--out", str(out))
    one_error_line(result, "--budgets 1.5")
    assert not out.exists()


def test_a_static_front_subset_that_is_not_fixed_is_one_line(tmp_path):
    out = tmp_path / "study"
    result = run_script(
        "scripts/budget_study.py",
        "--debug",
        "--static-front",
        "P3",
        "random:0.5",
        "--out",
        str(out),
    )
    one_error_line(result, "random:0.5")
    assert not out.exists()


def _student(run: Path, method: str, seed: int, ap: float, kd_gflops: float) -> None:
    metrics = {"method": method, "seed": seed, "AP": ap, "kd_gflops": kd_gflops}
    path = run / "students" / f"{method}-seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))


def test_a_comparison_from_students_pairs_only_the_last_reports_methods(tmp_path):
    report = {
        "methods": [{"method": "rl-policy"}, {"method": "random-samples@0.50"}],
        "budget": {"budget": 0.5, "pace": [3.0, 1.0]},
        "kd_gflops_all_levels": 2.0,
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    for seed, (policy, random) in enumerate([(0.12, 0.10), (0.13, 0.10), (0.11, 0.10)]):
        _student(tmp_path, "rl-policy", seed, policy, 1.0)
        _student(tmp_path, "random-samples@0.50", seed, random, 1.0)
        _student(tmp_path, "value-greedy@0.50", seed, 0.5, 1.0)  # from a copied run: not paired
    comparison = comparison_from_students(tmp_path)
    assert comparison["pace"] == [3.0, 1.0] and comparison["policy_kd_fraction"] == 0.5
    (row,) = comparison["controls"]
    assert row["method"] == "random-samples@0.50" and row["policy_minus_n"] == 3
    assert row["policy_minus_mean"] == pytest.approx(0.02)
