"""The budget study: one train_rl per budget, budget-free work shared, a paired table and a plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from experiments.budget_study import run_budget_study
from tests.conftest import one_error_line, run_script, tiny_rl_config


@pytest.mark.slow
def test_a_study_of_two_budgets_shares_the_teacher_and_pairs_every_control(tiny_config):
    config = tiny_rl_config(tiny_config, decisions=32)
    config = dataclasses.replace(
        config, experiment=dataclasses.replace(config.experiment, seeds=[0, 1])
    )
    record = run_budget_study(config, [0.4, 0.7])
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
    text = (out / "budget_study.md").read_text()
    assert "**At budget 0.40**" in text and "**At budget 0.70**" in text
    assert (out / "budget_study.png").stat().st_size > 0


def test_a_budget_outside_zero_one_is_one_line(tmp_path):
    out = tmp_path / "study"
    result = run_script("scripts/budget_study.py", "--debug", "--budgets", "1.5", "--out", str(out))
    one_error_line(result, "--budgets 1.5")
    assert not out.exists()
