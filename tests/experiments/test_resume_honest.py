"""train_rl never reuses results under a config they were not made from, and a damaged checkpoint
of any kind is one line (exit 2) that leaves the run directory as it was.

One tiny finished run is shared by the module; tests that change a run work on a copy of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from experiments.policy_learning import policy_fingerprint
from experiments.resume_checks import check_resume
from experiments.rl_pipeline import POLICY_METHOD, run_rl_experiment
from rlpkd.config import load_config, save_config
from rlpkd.errors import ResumeMismatchError
from rlpkd.rundir import read_json, write_json
from tests.conftest import REPO, run_script, tiny_overrides
from tests.dir_snapshot import directory_snapshot

DEBUG_CONFIG = REPO / "configs" / "debug.yaml"
CLI_TIMEOUT_S = 300


def _overrides(data_root: Path) -> list[str]:
    """The smallest whole train_rl run: 24 images, one PPO iteration of 8 decisions, one snapshot,
    four students (policy, none, all, random)."""
    return [
        *tiny_overrides(data_root),
        "runtime.device=cpu",
        "rl.iterations=1",
        "rl.slots=4",
        "rl.episode_steps=2",
        "rl.train_batch_size=8",
        "rl.minibatch_size=8",
        "rl.num_epochs=1",
        "rl.bank_decisions=8",
        "rl.hidden_sizes=[8]",
        "rl.snapshot_fractions=[0.0]",
        "rl.static_baselines=[]",
        "experiment.seeds=[0]",
    ]


def _config(data_root: Path, out: Path, *extra: str):
    return load_config(DEBUG_CONFIG, [*_overrides(data_root), f"runtime.out={out}", *extra])


@pytest.fixture(scope="module")
def finished_run(tiny_data_root, tmp_path_factory) -> Path:
    """A finished tiny train_rl run (rl.lam = 0.5); tests must not change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_rl_experiment(_config(tiny_data_root, out))
    assert (out / "report.md").is_file()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run (mtimes kept) that a test may change."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _train_rl(data_root: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    options = ["--config", str(DEBUG_CONFIG), *(f"--set={item}" for item in _overrides(data_root))]
    return run_script(
        "scripts/train_rl.py", *options, "--out", str(out), *args, timeout_s=CLI_TIMEOUT_S
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run's single ``error:`` line (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


@pytest.mark.slow
def test_resume_with_a_changed_lambda_stops_before_writing(tiny_data_root, finished_run):
    before = directory_snapshot(finished_run)
    result = _train_rl(tiny_data_root, finished_run, "--resume", "--set=rl.lam=2.0")
    line = _one_error_line(result)
    assert f"{finished_run} was started with another config: rl.lam 0.5 -> 2.0;" in line, line
    assert "without --resume" in line
    assert directory_snapshot(finished_run) == before
    assert "lam: 0.5" in (finished_run / "config.yaml").read_text()


def test_resume_check_names_every_changed_key_and_ignores_what_does_not_change_results(
    tiny_data_root, finished_run, tmp_path
):
    changed = _config(tiny_data_root, finished_run, "rl.lam=2.0", "distill.loss=mse")
    with pytest.raises(ResumeMismatchError) as error:
        check_resume(changed)
    assert "rl.lam 0.5 -> 2.0" in str(error.value)
    assert "distill.loss 'pkd' -> 'mse'" in str(error.value)
    moved = tmp_path / "moved-data"
    shutil.copytree(tiny_data_root, moved)
    same_results = _config(
        moved,
        finished_run,
        "runtime.progress=true",
        "runtime.num_threads=1",
        "data.preload=false",
        "data.num_workers=1",
        "experiment.seeds=[0,1]",  # more students: each is reused or run by its own fingerprint
        "rl.static_baselines=[P3]",
    )
    check_resume(same_results)


def test_resume_notices_a_warm_start_file_with_other_contents(tiny_data_root, tmp_path):
    from policies.ppo_checkpoints import PROGRESS_FILE

    warm = tmp_path / "meta_policy.pt"
    warm.write_bytes(b"first meta-policy")
    run = tmp_path / "run"
    config = _config(tiny_data_root, run, f"meta.warm_start={warm}")
    (run / "checkpoints" / "policy").mkdir(parents=True)
    save_config(config, run / "config.yaml")
    record = {"iteration": 1, "checkpoint": "iteration_0001", "history": []}
    record["fingerprint"] = policy_fingerprint(config)
    write_json(run / "checkpoints" / "policy" / PROGRESS_FILE, record)
    check_resume(config)
    warm.write_bytes(b"another meta-policy")
    with pytest.raises(ResumeMismatchError, match="contents of meta.warm_start"):
        check_resume(config)


@pytest.mark.slow
def test_without_resume_a_changed_lambda_redoes_ppo_and_reuses_the_teacher(
    tiny_data_root, run_copy
):
    teacher = run_copy / "checkpoints" / "teacher.pt"
    teacher_before = directory_snapshot(teacher.parent)["teacher.pt"]
    baseline = run_copy / "students" / "none-seed0" / "metrics.json"
    baseline_before = (baseline.read_bytes(), baseline.stat().st_mtime_ns)
    old_weights = torch.load(run_copy / "checkpoints" / "policy_weights.pt", weights_only=True)
    old = _config(tiny_data_root, run_copy)
    new = _config(tiny_data_root, run_copy, "rl.lam=2.0")
    assert old_weights["metadata"]["policy_fingerprint"] == policy_fingerprint(old)

    run_rl_experiment(new)

    assert directory_snapshot(teacher.parent)["teacher.pt"] == teacher_before
    assert (baseline.read_bytes(), baseline.stat().st_mtime_ns) == baseline_before
    progress = read_json(run_copy / "checkpoints" / "policy" / "progress.json")
    assert progress["fingerprint"] == policy_fingerprint(new) != policy_fingerprint(old)
    weights = torch.load(run_copy / "checkpoints" / "policy_weights.pt", weights_only=True)
    assert weights["metadata"]["policy_fingerprint"] == policy_fingerprint(new)
    assert any(not torch.equal(weights["state"][k], v) for k, v in old_weights["state"].items())
    policy_student = read_json(run_copy / "students" / f"{POLICY_METHOD}-seed0" / "metrics.json")
    assert "lam: 2.0" in (run_copy / "config.yaml").read_text()
    assert policy_student["student_fingerprint"] != read_json(baseline)["student_fingerprint"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_a_truncated_teacher_is_one_line_and_touches_nothing(tiny_data_root, run_copy):
    _truncate(run_copy / "checkpoints" / "teacher.pt")
    before = directory_snapshot(run_copy)
    line = _one_error_line(_train_rl(tiny_data_root, run_copy))
    assert "teacher checkpoint" in line and "teacher.pt" in line and "truncated" in line, line
    assert directory_snapshot(run_copy) == before


@pytest.mark.slow
def test_a_truncated_snapshot_is_one_line_and_touches_nothing(tiny_data_root, run_copy):
    (snapshot,) = (run_copy / "checkpoints" / "snapshots").glob("student_*.pt")
    _truncate(snapshot)
    before = directory_snapshot(run_copy)
    line = _one_error_line(_train_rl(tiny_data_root, run_copy, "--resume"))
    assert "snapshot" in line and snapshot.name in line and "delete it" in line, line
    assert directory_snapshot(run_copy) == before


@pytest.mark.slow
def test_a_corrupt_ppo_checkpoint_is_one_line_naming_the_folder(tiny_data_root, run_copy):
    policy = run_copy / "checkpoints" / "policy"
    _truncate(policy / "iteration_0001" / "algorithm_state.pkl")
    before = directory_snapshot(policy)
    line = _one_error_line(_train_rl(tiny_data_root, run_copy, "--resume"))
    assert "cannot restore the PPO checkpoint" in line and f"delete {policy}" in line, line
    assert directory_snapshot(policy) == before


@pytest.mark.slow
def test_a_truncated_warm_start_is_one_line_before_the_run_starts(
    tiny_data_root, finished_run, tmp_path
):
    warm = tmp_path / "policy_weights.pt"
    shutil.copy(finished_run / "checkpoints" / "policy_weights.pt", warm)
    _truncate(warm)
    out = tmp_path / "new-run"
    line = _one_error_line(_train_rl(tiny_data_root, out, f"--set=meta.warm_start={warm}"))
    assert "policy weights" in line and str(warm) in line and "truncated" in line, line
    assert not out.exists()


def test_a_truncated_decision_bank_stops_the_input_check(tiny_data_root, run_copy):
    from experiments.resume_checks import check_inputs_and_checkpoints
    from rlpkd.errors import CheckpointError
    from rlpkd.rundir import RunDirectory

    (bank,) = (run_copy / "checkpoints" / "snapshots").glob("decision_bank_*.npz")
    _truncate(bank)
    config = _config(tiny_data_root, run_copy)
    with pytest.raises(CheckpointError) as error:
        check_inputs_and_checkpoints(config, RunDirectory(run_copy), True, 3)
    assert bank.name in str(error.value) and "delete it" in str(error.value)
