"""A sweep whose trials the cluster cannot hold, or whose --address nobody answers, fails at once
with one line, before anything in the sweep directory is written or deleted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from experiments.tune.sweep import check_resumable, run_sweep
from experiments.tune.trials import absolute_paths
from policies.ray_runtime import check_address
from rlpkd.config import save_config
from rlpkd.errors import ResourceError, ResumeMismatchError
from tests.conftest import one_error_line
from tests.dir_snapshot import directory_snapshot
from tests.experiments.tune.conftest import run_sweep_script, tiny_sweep_overrides

UNREACHABLE = "127.0.0.1:1"
"""A port nobody listens on (binding it needs root)."""


def _earlier_sweep(sweep: Path, config) -> None:
    """What an earlier sweep leaves: its config, Tune's state and a finished trial."""
    sweep.mkdir(parents=True)
    save_config(absolute_paths(config), sweep / "config.yaml")
    (sweep / "tune" / "baseline-none-seed0").mkdir(parents=True)
    (sweep / "tune" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}\n")
    (sweep / "tune" / "baseline-none-seed0" / "result.json").write_text("{}\n")
    (sweep / "trials" / "baseline-none-seed0").mkdir(parents=True)
    (sweep / "trials" / "baseline-none-seed0" / "metrics.json").write_text('{"AP": 0.5}\n')


def _sweep_cli(data_root, sweep: Path, *args: str, timeout_s: float = 300):
    return run_sweep_script(tiny_sweep_overrides(data_root, sweep), *args, timeout_s=timeout_s)


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_gpu_sweep_on_a_cpu_machine_is_one_line_and_leaves_the_old_sweep_alone(
    make_sweep_config, tiny_data_root, tmp_path, resume
):
    sweep = tmp_path / "sweep"
    _earlier_sweep(sweep, make_sweep_config(out=sweep))
    before = directory_snapshot(sweep)
    args = ["--set=sweep.trial_gpus=1"] + (["--resume"] if resume else [])
    line = one_error_line(_sweep_cli(tiny_data_root, sweep, *args))
    assert "1 GPU" in line and "sweep.trial_gpus" in line and "0 GPUs" in line, line
    assert directory_snapshot(sweep) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sweep.trial_gpus=0.25"], "0.25 GPUs"),
        (["sweep.trial_cpus=3"], "3 CPUs"),
        (["sweep.rl_lams=[0.1]", "rl.num_gpus_per_learner=1"], "rl.num_gpus_per_learner"),
    ],
)
def test_resources_no_node_has_fail_before_the_sweep_dir_is_touched(
    make_sweep_config, local_ray, tmp_path, overrides, expected
):
    sweep = tmp_path / "sweep"
    _earlier_sweep(sweep, make_sweep_config(out=sweep))
    before = directory_snapshot(sweep)
    with pytest.raises(ResourceError, match=expected) as error:
        run_sweep(make_sweep_config(*overrides, out=sweep), progress=False)
    assert "\n" not in str(error.value)
    assert directory_snapshot(sweep) == before


@pytest.mark.slow
def test_an_unreachable_address_is_one_line_within_seconds(tiny_data_root, tmp_path):
    sweep = tmp_path / "sweep"
    start = time.monotonic()
    result = _sweep_cli(tiny_data_root, sweep, f"--address={UNREACHABLE}", timeout_s=60)
    elapsed = time.monotonic() - start
    line = one_error_line(result)
    assert f"--address {UNREACHABLE}: nothing answers" in line, line
    assert elapsed < 15, f"took {elapsed:.0f} s"
    assert not sweep.exists()


@pytest.mark.parametrize(
    "address, env",
    [
        (f"ray://{UNREACHABLE}", None),
        ("auto", UNREACHABLE),  # 'auto' follows RAY_ADDRESS first, as ray.init does
        ("not-an-address", None),
    ],
)
def test_check_address_fails_fast_on_addresses_nobody_answers(monkeypatch, address, env):
    if env is not None:
        monkeypatch.setenv("RAY_ADDRESS", env)
    start = time.monotonic()
    with pytest.raises(ResourceError, match=f"--address {address}: ") as error:
        check_address(address)
    assert time.monotonic() - start < 10
    assert "\n" not in str(error.value)


def test_resume_with_other_settings_names_every_changed_key(make_sweep_config):
    config = absolute_paths(make_sweep_config())
    sweep = Path(config.runtime.out)
    sweep.mkdir(parents=True)
    save_config(config, sweep / "config.yaml")
    changed = absolute_paths(make_sweep_config("student_schedule.epochs=3", "distill.loss=mse"))
    with pytest.raises(ResumeMismatchError) as error:
        check_resumable(changed, sweep)
    message = str(error.value)
    assert "student_schedule.epochs 1 -> 3" in message and "distill.loss 'pkd' -> 'mse'" in message
    assert "\n" not in message
