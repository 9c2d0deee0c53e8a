"""The budget study: one train_rl per budget, budget-free work shared, a paired table and a plot."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.budget_study import run_budget_study
from rlpkd.config import RLConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_study_of_two_budgets_shares_the_teacher_and_pairs_every_control(tiny_config):
    rl = RLConfig(
        slots=4,
        episode_steps=2,
        iterations=2,
        train_batch_size=32,
        minibatch_size=16,
        num_epochs=1,
        hidden_sizes=[8],
        static_baselines=["P3"],
        bank_decisions=32,
    )
    experiment = dataclasses.replace(tiny_config.experiment, seeds=[0, 1])
    config = dataclasses.replace(tiny_config, rl=rl, experiment=experiment)
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
    result = subprocess.run(
        [
            sys.executable,
            "scripts/budget_study.py",
            "--debug",
            "--budgets",
            "1.5",
            "--out",
            str(tmp_path / "study"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--budgets 1.5" in lines[0], result.stderr
    assert not (tmp_path / "study").exists()
