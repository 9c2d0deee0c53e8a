"""One table of controls (``experiments.controls.BUDGET_CONTROLS``) drives train_rl, the sweep's RL
trials, the sweep's report and its Pareto plot: a new control is one entry, and every one of them
picks it up without naming it."""

from __future__ import annotations

import dataclasses

import pytest

from experiments.controls import (
    BUDGET_CONTROLS,
    Control,
    ControlInputs,
    control_kind,
    control_record,
)
from experiments.policy_students import student_runs
from experiments.tune.trials import TrialSpec, trial_fingerprint
from experiments.validation import validate_config_names
from rlpkd.config import apply_overrides, config_from_dict, config_to_dict
from rlpkd.errors import ConfigError
from rlpkd.report.comparison import summary_sentences
from rlpkd.report.sweep_rows import comparison_rows, comparison_summary
from rlpkd.training.budget_selection import BudgetedLevels
from rlpkd.viz.pareto import pareto_series
from tests.conftest import tiny_distillation_inputs

NEW = Control(
    "every-other",
    "heuristic",
    "all levels on every other sample",
    BUDGET_CONTROLS["random-samples"].build,
    at_price=True,
)


def _with(config, *overrides):
    return config_from_dict(apply_overrides(config_to_dict(config), list(overrides)))


def _trial(method, seed, ap, controls=None):
    trial = {"kind": "rl", "method": method, "seed": seed, "lam": 0.1, "AP": ap}
    trial |= {"kd_gflops": 0.3, "AP50": ap, "AP75": ap, "trial_id": f"rl-seed{seed}"}
    return trial | ({"controls": controls} if controls else {})


@pytest.mark.parametrize("budget", [None, 0.5])
def test_a_new_entry_is_planned_by_train_rl_and_changes_the_sweeps_rl_trials(
    tiny_config, monkeypatch, budget
):
    config = _with(tiny_config, f"rl.budget={'null' if budget is None else budget}")
    spec = TrialSpec("rl-lam0.1-seed0", "rl", "rl λ=0.1", 0, lam=0.1)
    before = trial_fingerprint(spec, config)
    assert "every-other@0.40" not in [method for method, _ in student_runs(config, 0.4)]

    monkeypatch.setitem(BUDGET_CONTROLS, NEW.name, NEW)
    runs = dict(student_runs(config, 0.4))
    assert runs["every-other@0.40"].startswith("control:every-other:0.4")
    assert control_kind("every-other@0.40") == "heuristic"
    # a sweep's RL trial trains the same table (a new entry is a new trial, not a reused one)
    assert trial_fingerprint(spec, config) != before
    unpriced = dataclasses.replace(NEW, at_price=False)
    monkeypatch.setitem(BUDGET_CONTROLS, NEW.name, unpriced)
    planned = [method for method, _ in student_runs(config, 0.4)]
    assert ("every-other@0.40" in planned) == (budget is not None)


def test_the_sweeps_report_and_plot_read_a_new_control_from_the_trials():
    record = control_record("every-other@0.40")
    assert record == {}  # not in the table: nothing to describe
    controls = {
        "every-other": {"AP": 0.20, "kd_gflops": 0.3, "AP50": 0.2, "AP75": 0.2}
        | {"control": NEW.name, "control_kind": NEW.kind, "description": NEW.description}
    }
    trials = [_trial("rl λ=0.1", seed, 0.22 + 0.01 * seed, controls) for seed in (0, 1)]
    rows = comparison_rows(trials)
    control_row = next(row for row in rows if row["method"] == "rl λ=0.1 every-other")
    assert control_row["control_kind"] == "heuristic"
    policy = next(row for row in rows if row["method"] == "rl λ=0.1")
    assert policy["minus_every-other_AP_mean"] == pytest.approx(0.025)
    text = "\n".join(summary_sentences(comparison_summary(rows, 0.0)))
    assert "vs every-other (all levels on every other sample) → above by 2.50 points" in text
    series = pareto_series(rows, {"static_front": []})
    assert series["controls"]["every-other"]["description"] == NEW.description


def test_experiment_controls_chooses_which_entries_train(tiny_config):
    config = _with(tiny_config, "rl.budget=0.5", "experiment.controls=[random-samples,late]")
    planned = [method for method, spec in student_runs(config, 0.4) if spec.startswith("control:")]
    assert planned == ["random-samples@0.40", "late@0.40"]
    alone = _with(tiny_config, "rl.budget=0.5", "experiment.controls=[]")
    assert [method for method, _ in student_runs(alone, 0.4)] == ["rl-policy", "none", "all"]
    with pytest.raises(ConfigError, match="experiment.controls.*'nope'"):
        validate_config_names(_with(tiny_config, "experiment.controls=[nope]"))


def test_every_budgeted_control_spends_by_the_runs_pace(tiny_config, tmp_path):
    """``rl.budget_pace`` reaches every control that spends through a budget account (and its
    fingerprint); the temporal controls keep their own schedule."""
    config = _with(tiny_config, "rl.budget=0.5", "rl.budget_pace=[3, 1]")
    datasets, _, flops = tiny_distillation_inputs(config)
    inputs = ControlInputs(config, flops, tmp_path / "unused.pt", 0, datasets)
    arguments = {"static-mix": "P5/P2,P3,P4,P5"}
    for name in ("random-samples", "random-subsets", "gap-ranked", "loss-ranked", "static-mix"):
        selector = BUDGET_CONTROLS[name].build(inputs, 0.5, arguments.get(name, ""))
        assert isinstance(selector, BudgetedLevels), name
        assert selector.account.pace == (3.0, 1.0), name
        assert selector.fingerprint.endswith(":pace=0.7500,0.2500"), name
    early = BUDGET_CONTROLS["early"].build(inputs, 0.5, "")
    assert "pace" not in early.fingerprint
