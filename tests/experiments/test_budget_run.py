"""train_rl with a KD budget: Phase 2 moves λ, Phase 3 holds the budget, and one table of
controls (``experiments.controls``) decides which students train and what the report compares."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.controls import BUDGET_CONTROLS, POLICY_METHOD, control_kind, parse_control_spec
from experiments.policy_students import student_runs
from experiments.rl_pipeline import run_rl_experiment
from rlpkd.errors import ConfigError
from rlpkd.report.budget_comparison import COST_TOLERANCE
from tests.conftest import tiny_rl_config

BUDGET = 0.5


def _budget_config(tiny_config):
    config = tiny_rl_config(tiny_config, decisions=32, iterations=3, budget=BUDGET)
    experiment = dataclasses.replace(config.experiment, seeds=[0, 1], control_seeds=[])
    return dataclasses.replace(config, experiment=experiment)


def test_one_table_of_controls_plans_the_budget_runs(tiny_config):
    config = _budget_config(tiny_config)
    runs = student_runs(config, 0.48, (3, 15))
    methods = [method for method, _ in runs]
    assert methods[:3] == [POLICY_METHOD, "none", "all"]
    # every entry of the table is one run, and each spec names its entry at the policy's cost
    specs = [spec for _, spec in runs[3:]]
    assert [parse_control_spec(spec)[0].name for spec in specs] == list(BUDGET_CONTROLS)
    assert all(parse_control_spec(spec)[1] == pytest.approx(0.48) for spec in specs)
    assert {control_kind(m) for m in methods[3:]} == {c.kind for c in BUDGET_CONTROLS.values()}
    with pytest.raises(ConfigError, match="unknown control 'nope'"):
        parse_control_spec("control:nope:0.5")
    # without a budget: the table's entries that train beside a policy at a fixed price
    at_price = [spec for _, spec in student_runs(tiny_config, 0.48) if spec.startswith("control:")]
    names = [parse_control_spec(spec)[0].name for spec in at_price]
    assert (
        names
        == [c.name for c in BUDGET_CONTROLS.values() if c.at_price]
        == [
            "random-subsets",
            "shuffled",
        ]
    )


@pytest.mark.slow
def test_train_rl_at_a_budget_holds_it_and_reports_every_control(tiny_config):
    config = _budget_config(tiny_config)
    report = run_rl_experiment(config)
    out = Path(config.runtime.out)
    learning = json.loads((out / "policy_learning.json").read_text())
    lams = [h["budget_lam"] for h in learning["history"]]
    assert lams[0] == pytest.approx(config.rl.lam) and len(set(lams)) > 1  # λ moved
    assert learning["budget"]["budget"] == BUDGET
    comparison = report["budget"]
    assert comparison["policy_holds_budget"], comparison["policy_kd_fraction"]
    policy_fraction = comparison["policy_kd_fraction"]
    rows = {row["method"]: row for row in comparison["controls"]}
    for method, row in rows.items():
        if row["kind"] == "reference" or method.startswith("best-static"):
            continue
        # within 2%, or one sample's cost on this 24-image schedule (a real one has thousands)
        slack = COST_TOLERANCE * policy_fraction + 1.0 / 24
        assert abs(row["kd_fraction"] - policy_fraction) <= slack, (method, row["kd_fraction"])
        assert row["policy_minus_n"] == 2, method  # paired on both seeds
    assert {row["kind"] for row in report["methods"]} >= {"policy", "random", "heuristic"}
    text = (out / "report.md").read_text()
    assert f"**At budget {BUDGET:.2f}**" in text and "gap-ranked@" in text
    # how it spends differently from random samples at the same cost: a sentence and heatmaps
    assert "differently from `random-samples@" in text
    assert (out / "plots" / "selection_vs_random-samples_by_progress.png").is_file()
