"""A local sweep end to end, a trial that fails, and ASHA stopping only what it should."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from ray.tune.schedulers import TrialScheduler

from experiments.tune.scheduler import POLICY_RETURN, RLTrialsASHA, build_scheduler
from experiments.tune.sweep import check_resumable, run_sweep
from experiments.tune.trials import absolute_paths
from rlpkd.config import save_config
from rlpkd.errors import ConfigError, ResumeMismatchError
from rlpkd.rundir import read_json

TRIALS = ("baseline-none-seed0", "baseline-all-seed0")
REPORT_FILES = ("report.md", "report.json", "results.csv", "plots/pareto.png")


@pytest.mark.slow
def test_local_sweep_writes_every_run_dir_and_the_report(make_sweep_config, local_ray, capsys):
    config = make_sweep_config()
    outcome = run_sweep(config, progress=False)
    sweep = Path(config.runtime.out)

    assert outcome["statuses"] == dict.fromkeys(TRIALS, "TERMINATED")
    assert outcome["trials"] == 2 and sorted(outcome["finished"]) == sorted(TRIALS)
    assert outcome["errored"] == [] and outcome["unfinished"] == []
    kd_gflops = {}
    for trial_id in TRIALS:
        run = sweep / "trials" / trial_id
        for name in ("metrics.json", "config.yaml", "predictions.json"):
            assert (run / name).is_file(), f"{trial_id} lacks {name}"
        metrics = read_json(run / "metrics.json")
        assert metrics["trial_id"] == trial_id and metrics["node_id"], metrics
        kd_gflops[trial_id] = metrics["kd_gflops"]
        # the trial ran with sweep.trial_threads torch threads, and its config says so
        assert "num_threads: 1" in (run / "config.yaml").read_text()
        assert (sweep / "tune" / trial_id / "result.json").is_file()  # Tune's trial dir by id
    assert kd_gflops["baseline-none-seed0"] == 0 < kd_gflops["baseline-all-seed0"]
    for name in REPORT_FILES:
        assert (sweep / name).is_file(), name
    assert outcome["report"] == str(sweep / "report.md")
    methods = {row["method"] for row in read_json(sweep / "report.json")["methods"]}
    assert {"none", "all"} <= methods

    # Run again without --resume: a new Tune experiment; run_trial reuses the finished runs.
    done = {t: (sweep / "trials" / t / "metrics.json").read_bytes() for t in TRIALS}
    old_state = sorted((sweep / "tune").glob("experiment_state-*.json"))
    capsys.readouterr()
    outcome = run_sweep(config, progress=False)
    assert "replacing the earlier Tune state" in capsys.readouterr().out
    assert outcome["statuses"] == dict.fromkeys(TRIALS, "TERMINATED")
    assert old_state and not any(path.exists() for path in old_state)
    for trial_id in TRIALS:
        run = sweep / "trials" / trial_id
        assert (run / "metrics.json").read_bytes() == done[trial_id]  # reused, not retrained
        assert read_json(run / "attempts.json") == {"attempts": 2}


@pytest.mark.slow
def test_a_failing_trial_is_reported_with_its_error_file(make_sweep_config, local_ray, capsys):
    config = make_sweep_config()
    sweep = Path(config.runtime.out)
    # The 'all' trial cannot create its run directory: a file stands where it belongs.
    (sweep / "trials").mkdir(parents=True)
    (sweep / "trials" / "baseline-all-seed0").write_text("in the way")

    outcome = run_sweep(config, progress=False)

    assert outcome["statuses"] == {
        "baseline-none-seed0": "TERMINATED",
        "baseline-all-seed0": "ERROR",
    }
    (error,) = outcome["errored"]
    assert error["trial_id"] == "baseline-all-seed0"
    assert Path(error["error_file"]).is_file()
    assert "baseline-all-seed0" in Path(error["error_file"]).read_text()
    printed = capsys.readouterr().out
    assert f"errored: baseline-all-seed0: {error['error']}  ({error['error_file']})" in printed
    assert "1/2 trials finished, 0 diverged, 1 errored" in printed
    assert outcome["report"] == str(sweep / "report.md")  # built from the trial that finished


def _results(sweep: Path, trial_id: str) -> list[dict]:
    lines = (sweep / "tune" / trial_id / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_asha_sweep_finishes_non_rl_trials_and_reads_rl_returns(make_sweep_config, local_ray):
    config = make_sweep_config(
        "sweep.scheduler=asha",
        "sweep.asha_grace_period=1",
        "sweep.rl_lams=[0.1]",
        "sweep.baselines=[none]",
    )
    outcome = run_sweep(config, progress=False)
    sweep = Path(config.runtime.out)

    rl, static = "rl-lam0.1-seed0", "baseline-none-seed0"
    # The static trial's single result has no policy_return: Tune's strict metric check would
    # abort the experiment under a plain ASHAScheduler(metric='policy_return').
    assert POLICY_RETURN not in _results(sweep, static)[-1]
    assert outcome["statuses"] == {rl: "TERMINATED", static: "TERMINATED"}
    assert sorted(outcome["finished"]) == sorted([rl, static])
    # ASHA saw the RL trial's return after every PPO iteration, under its metric's name.
    curve = [r for r in _results(sweep, rl) if POLICY_RETURN in r]
    assert [r["training_iteration"] for r in curve] == list(range(1, config.rl.iterations + 1))
    assert read_json(sweep / "trials" / rl / "metrics.json")["lam"] == 0.1


class _FakeTrial:
    def __init__(self, trial_id: str, kind: str, lam: float | None = None) -> None:
        self.trial_id = trial_id
        self.config = {"trial": {"trial_id": trial_id, "kind": kind, "lam": lam}}


def _curve_point(iteration: int, value: float) -> dict:
    return {"training_iteration": iteration, POLICY_RETURN: value}


def test_asha_compares_rl_trials_of_one_lambda_and_leaves_the_rest(make_sweep_config):
    config = make_sweep_config(
        "sweep.scheduler=asha",
        "sweep.asha_grace_period=1",
        "sweep.asha_reduction_factor=2",
        "rl.iterations=4",
    )
    scheduler = pickle.loads(pickle.dumps(build_scheduler(config)))  # Tune pickles it
    assert isinstance(scheduler, RLTrialsASHA)
    assert scheduler.metric is None  # so Tune does not demand policy_return from every trial
    good, bad = _FakeTrial("good", "rl", 0.1), _FakeTrial("bad", "rl", 0.1)
    costly = _FakeTrial("costly", "rl", 1.0)
    static = _FakeTrial("static", "static")
    for trial in (good, bad, costly, static):
        scheduler.on_trial_add(None, trial)
    CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP

    assert scheduler.on_trial_result(None, good, _curve_point(1, 1.0)) == CONTINUE
    assert scheduler.on_trial_result(None, bad, _curve_point(1, 0.5)) == STOP
    # A larger λ has lower returns by construction: it is not compared with λ=0.1.
    assert scheduler.on_trial_result(None, costly, _curve_point(1, -5.0)) == CONTINUE
    # Non-RL trials are never stopped, whatever they report.
    assert scheduler.on_trial_result(None, static, {"training_iteration": 1, "AP": 0.1}) == CONTINUE
    assert scheduler.on_trial_result(None, static, _curve_point(1, -99.0)) == CONTINUE
    # A surviving trial goes on past its last PPO iteration (its student is still to train).
    for iteration in (2, 3, 4, 5):
        assert scheduler.on_trial_result(None, good, _curve_point(iteration, 2.0)) == CONTINUE
    # Tune adds a retried trial again: it stays one trial of its ASHA, and then leaves it once.
    scheduler.on_trial_add(None, good)
    scheduler.on_trial_complete(None, good, {"training_iteration": 5, "AP": 0.2})
    # A stopped trial completes with its last point on the curve; a pending one is removed.
    scheduler.on_trial_complete(None, bad, _curve_point(1, 0.5))
    scheduler.on_trial_remove(None, costly)
    scheduler.on_trial_complete(None, static, {"training_iteration": 1, "AP": 0.1})
    assert "λ=0.1" in scheduler.debug_string() and "λ=1" in scheduler.debug_string()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["sweep.asha_grace_period=5", "sweep.rl_lams=[0.1]"], "asha_grace_period"),
        (["sweep.asha_reduction_factor=1"], "asha_reduction_factor"),
    ],
)
def test_bad_asha_settings_are_config_errors(make_sweep_config, overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_scheduler(make_sweep_config("sweep.scheduler=asha", *overrides))


def test_resume_refuses_a_changed_config(make_sweep_config):
    config = absolute_paths(make_sweep_config())
    sweep = Path(config.runtime.out)
    sweep.mkdir(parents=True)
    save_config(config, sweep / "config.yaml")

    check_resumable(absolute_paths(make_sweep_config("sweep.trial_cpus=2")), sweep)
    with pytest.raises(ResumeMismatchError, match="student_schedule.epochs 1 -> 3"):
        check_resumable(absolute_paths(make_sweep_config("student_schedule.epochs=3")), sweep)
