"""Sweep trials outside Tune: the spec list, a static trial's run directory and its reuse, an RL trial."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle

import pytest
import yaml

import experiments.controls as controls_module
from experiments.controls import BUDGET_CONTROLS, controls_beside
from experiments.tune.trials import (
    FAILED_FILE,
    TrialDivergedError,
    TrialSpec,
    build_trial_specs,
    prepare_sweep,
    run_trial,
    teacher_path,
    trial_dir,
    trial_fingerprint,
)
from rlpkd.config import apply_overrides, config_from_dict, config_to_dict
from rlpkd.errors import ConfigError, DivergenceError, UserError, divergence_in
from rlpkd.report.comparison import build_sweep_report
from rlpkd.rundir import read_json
from tests.dir_snapshot import directory_snapshot


def _with(config, *overrides):
    return config_from_dict(apply_overrides(config_to_dict(config), list(overrides)))


def test_specs_cover_every_kind_and_seed(tiny_config):
    config = _with(
        tiny_config,
        "sweep.seeds=[0, 1]",
        "sweep.rl_lams=[0.1, 0.3]",
        "sweep.nas_methods=[darts, evolution]",
        "sweep.baselines=['random:0.5']",
        "sweep.static_grid=true",
    )
    specs = build_trial_specs(config)
    kinds = [spec.kind for spec in specs]
    assert kinds.count("rl") == 4 and kinds.count("nas") == 4 and kinds.count("baseline") == 2
    assert kinds.count("static") == 32
    assert len({spec.trial_id for spec in specs}) == len(specs)
    assert {spec.method for spec in specs if spec.kind == "rl"} == {"rl λ=0.1", "rl λ=0.3"}
    assert TrialSpec.from_dict(specs[0].to_dict()) == specs[0]
    assert kinds[:4] == ["rl"] * 4  # the longest trials start first, every seed's


def test_fingerprint_follows_what_decides_a_trial(tiny_config):
    rl = TrialSpec("rl-lam0.1-seed0", "rl", "rl λ=0.1", 0, lam=0.1)
    static = TrialSpec("static-P2-seed0", "static", "P2", 0, levels="P2")
    base = {spec.trial_id: trial_fingerprint(spec, tiny_config) for spec in (rl, static)}
    # rl.lam is set by the spec and the sweep's lists only choose trials: same fingerprints
    same = _with(tiny_config, "rl.lam=0.9", "sweep.seeds=[5]", "sweep.rl_lams=[0.7]")
    assert {s.trial_id: trial_fingerprint(s, same) for s in (rl, static)} == base
    # the student's schedule and the device decide the result
    for override in ("student_schedule.epochs=3", "sweep.trial_gpus=0.25"):
        other = _with(tiny_config, override)
        assert trial_fingerprint(static, other) != base[static.trial_id], override
    assert trial_fingerprint(rl, _with(tiny_config, "rl.iterations=7")) != base[rl.trial_id]


def test_unknown_search_method_names_the_valid_ones(tiny_config):
    config = _with(tiny_config, "sweep.nas_methods=[dart]")
    with pytest.raises(ConfigError, match="dart.*valid: .*darts"):
        build_trial_specs(config)


def test_static_trial_writes_a_run_directory_and_is_reused(tiny_config, tmp_path):
    sweep = tmp_path / "sweep"
    prepare_sweep(tiny_config, sweep, progress=False)
    assert teacher_path(sweep).is_file() and (sweep / "config.yaml").is_file()
    spec = TrialSpec("static-P3-seed0", "static", "P3", 0, levels="P3")
    metrics = run_trial(spec, tiny_config, sweep)
    folder = trial_dir(sweep, spec.trial_id)
    for name in ("metrics.json", "predictions.json", "config.yaml"):
        assert (folder / name).is_file()
    assert metrics["kind"] == "static" and metrics["method"] == "P3" and metrics["levels"] == "P3"
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["kd_gflops"] > 0
    assert metrics["trial_attempts"] == 1
    written = (folder / "metrics.json").read_bytes()

    again = run_trial(spec, tiny_config, sweep)
    assert again["AP"] == metrics["AP"]
    assert (folder / "metrics.json").read_bytes() == written  # not retrained, not rewritten
    assert read_json(folder / "attempts.json")["attempts"] == 2

    changed = dataclasses.replace(
        tiny_config, distill=dataclasses.replace(tiny_config.distill, weight=2.0)
    )
    rerun = run_trial(spec, changed, sweep)
    assert rerun["trial_fingerprint"] != metrics["trial_fingerprint"]

    # a rerun with other inputs that fails leaves no stale result behind
    teacher_path(sweep).unlink()
    with pytest.raises(UserError, match="checkpoint not found"):
        run_trial(spec, tiny_config, sweep)
    assert not (folder / "metrics.json").exists()


@pytest.mark.slow
def test_rl_trial_learns_a_policy_and_reports_each_iteration(tiny_config, tmp_path):
    config = _with(tiny_config, "rl.iterations=2")
    sweep = tmp_path / "sweep"
    prepare_sweep(config, sweep, progress=False)
    reports = []
    spec = TrialSpec("rl-lam0.2-seed0", "rl", "rl λ=0.2", 0, lam=0.2)
    try:
        metrics = run_trial(spec, config, sweep, report=reports.append)
    finally:
        import ray

        ray.shutdown()
    assert [r["training_iteration"] for r in reports] == [1, 2]
    assert metrics["lam"] == 0.2 and metrics["levels"] == "rl-policy"
    saved = yaml.safe_load((trial_dir(sweep, spec.trial_id) / "config.yaml").read_text())
    assert saved["rl"]["lam"] == 0.2  # the resolved config of this trial, not the sweep's default
    assert 0.0 <= metrics["policy_kd_flops_fraction"] <= 1.0
    folder = trial_dir(sweep, spec.trial_id)
    learning = json.loads((folder / "policy_learning.json").read_text())
    assert len(learning["history"]) == 2
    assert (folder / "decisions.jsonl").is_file()
    assert list((sweep / "shared" / "snapshots").glob("*.pt"))
    # the controls of experiments/controls.py that train beside a policy at a fixed price, at its
    # measured FLOPs: its shuffled masks (the policy's masks on the control's own student, permuted
    # in each batch; as the two students drift apart a per-sample policy picks slightly other
    # masks, so the totals agree closely, not exactly) and random subsets held to its cost
    assert sorted(metrics["controls"]) == sorted(c.name for c in controls_beside(config))
    for name, control in metrics["controls"].items():
        assert control["control"] == name and control["description"]
        assert (folder / "controls" / name / "metrics.json").is_file()
        assert control["kd_gflops"] == pytest.approx(metrics["kd_gflops"], rel=0.05), name
        assert 0.0 <= control["AP"] <= 1.0
    assert (folder / "controls" / "shuffled" / "decisions.jsonl").is_file()
    assert (folder / "plots" / "selection_by_regime.png").is_file()
    # the tiny data is one 'mixed' regime: nothing to be informative about
    assert metrics["subset_regime_mi_bits"] == 0.0
    assert metrics["controls"]["shuffled"]["subset_regime_mi_bits"] == 0.0


@pytest.mark.slow
def test_an_rl_trial_at_a_budget_trains_the_tables_controls_at_the_policys_cost(
    tiny_config, tmp_path, monkeypatch
):
    # two entries of the table stand for all of it (each entry is tested in test_budget_run)
    table = {name: BUDGET_CONTROLS[name] for name in ("random-samples", "loss-ranked")}
    monkeypatch.setattr(controls_module, "BUDGET_CONTROLS", table)
    config = _with(tiny_config, "rl.iterations=2", "rl.budget=0.5")
    sweep = tmp_path / "sweep"
    prepare_sweep(config, sweep, progress=False)
    spec = build_trial_specs(_with(config, "sweep.rl_lams=[0.2]", "sweep.seeds=[0]"))[0]
    assert spec.method == "rl budget=0.5 λ₀=0.2"
    try:
        metrics = run_trial(spec, config, sweep)
    finally:
        import ray

        ray.shutdown()
    assert metrics["budget"] == 0.5
    assert metrics["policy_kd_flops_fraction"] == pytest.approx(0.5, abs=0.01 + 1 / 24)
    assert sorted(metrics["controls"]) == ["loss-ranked", "random-samples"]
    for name, control in metrics["controls"].items():
        assert control["control_kind"] == table[name].kind
        # within 2%, or one sample's cost on this tiny schedule (a real one has thousands)
        slack = 0.02 * metrics["kd_gflops"] + metrics["kd_gflops"] / 0.5 / 24
        assert abs(control["kd_gflops"] - metrics["kd_gflops"]) <= slack, name


@pytest.mark.slow
def test_a_diverged_trial_is_marked_failed_and_not_retrained(tiny_config, tmp_path):
    sweep = tmp_path / "sweep"
    prepare_sweep(tiny_config, sweep, progress=False)
    spec = TrialSpec("baseline-all-seed0", "baseline", "all", 0, levels="all")  # in trials.json
    folder = trial_dir(sweep, spec.trial_id)
    finished = run_trial(spec, tiny_config, sweep)  # an earlier success with other inputs
    assert (folder / "metrics.json").is_file()

    diverging = _with(tiny_config, "student_schedule.lr=1000000.0")
    with pytest.raises(DivergenceError) as caught:
        run_trial(spec, diverging, sweep)
    error = caught.value
    # Tune copies a trial's error and ships it between processes
    for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert isinstance(clone, DivergenceError) and str(clone) == str(error)
    assert not (folder / "metrics.json").exists()  # the stale success is gone, not reported
    failed = read_json(folder / FAILED_FILE)
    assert failed["error"] == str(error) and "\n" not in failed["error"]
    assert (failed["phase"], failed["step"], failed["term"]) == (
        "student all seed 0",
        error.step,
        error.term,
    )
    assert failed["kind"] == "baseline" and failed["method"] == "all" and failed["seed"] == 0
    assert failed["trial_fingerprint"] == trial_fingerprint(spec, diverging)

    # Tune's retry or --resume with the same inputs: the same error at once, nothing retrained
    # (the teacher is gone, so a retraining would fail on it instead)
    snapshot = directory_snapshot(folder)
    teacher = teacher_path(sweep).read_bytes()
    teacher_path(sweep).unlink()
    with pytest.raises(DivergenceError) as again:
        run_trial(spec, diverging, sweep)
    assert str(again.value) == str(error)
    after = directory_snapshot(folder)
    assert {k: v for k, v in after.items() if k != "attempts.json"} == {
        k: v for k, v in snapshot.items() if k != "attempts.json"
    }

    # the report lists it as failed, never as a result
    report = build_sweep_report(sweep)
    assert report["methods"][0]["status"] == "failed" and report["methods"][0]["n"] == 0
    assert [f["trial_id"] for f in report["failed"]] == [spec.trial_id]
    assert "## Failed trials" in (sweep / "report.md").read_text()

    # other inputs (the original learning rate) clear the mark and train again
    teacher_path(sweep).write_bytes(teacher)
    rerun = run_trial(spec, tiny_config, sweep)
    assert rerun["AP"] == finished["AP"] and not (folder / FAILED_FILE).exists()


def test_a_divergence_wrapped_by_rllib_or_ray_is_found():
    original = DivergenceError("the policy-learning env", 4, "reward", math.nan)
    try:
        try:
            raise original
        except DivergenceError as error:
            raise RuntimeError("env step failed") from error  # what RLlib's env runner does
    except RuntimeError as wrapped:
        assert divergence_in(wrapped) is original
    assert divergence_in(ValueError("unrelated")) is None
    clone = pickle.loads(pickle.dumps(TrialDivergedError("teacher", 2, "detection", math.inf)))
    assert (clone.phase, clone.step, clone.term, clone.value) == (
        "teacher",
        2,
        "detection",
        math.inf,
    )
