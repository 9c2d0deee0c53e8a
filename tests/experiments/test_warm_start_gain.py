"""The Reptile warm-start measurement: its iteration counts, its files, its refusal of a mismatch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from envs.observation import observation_dim
from experiments.warm_start_gain import curve_gain, run_warm_start_gain
from policies.level_policy_module import build_level_module
from policies.weights import save_weights_file
from rlpkd.data.build import build_datasets
from tests.conftest import run_script
from tests.dir_snapshot import directory_snapshot


def test_gain_counts_iterations_on_the_scratch_curves_scale():
    scratch = [0.0, 2.0, 5.0, 8.0, 9.5, 10.0]  # 90% of its rise: 9.0, reached at iteration 5
    warm = [6.0, 9.2, 9.9]  # reaches 9.0 at iteration 2
    gain = curve_gain(warm, scratch)
    assert (gain["warm_iterations"], gain["scratch_iterations"]) == (2, 5)
    assert gain["warm_first_return"] == 6.0 and gain["scratch_last_return"] == 10.0
    # a warm curve that never gets there says so (None), it is not counted as fast
    assert curve_gain([1.0, 2.0], scratch)["warm_iterations"] is None
    # falling returns (a cost) work the same way
    assert curve_gain([-1.0], [-5.0, -3.0, -1.0])["warm_iterations"] == 1


def _meta_weights(tiny_config, path: Path, hidden=None, head="joint") -> Path:
    datasets = build_datasets(tiny_config.data, progress=False)
    hidden = list(hidden or tiny_config.rl.hidden_sizes)
    module = build_level_module(observation_dim(datasets.num_classes), hidden, head)
    return save_weights_file(
        path, module.state_dict(), observation_dim(datasets.num_classes), hidden, policy_head=head
    )


@pytest.mark.slow
def test_measurement_writes_both_curves_per_seed(tiny_config, tmp_path):
    weights = _meta_weights(tiny_config, tmp_path / "meta.pt")
    record = run_warm_start_gain(tiny_config, weights, [0])
    out = Path(tiny_config.runtime.out)
    saved = json.loads((out / "warm_start_gain.json").read_text())
    assert [run["seed"] for run in saved["runs"]] == [0]
    run = record["runs"][0]
    iterations = tiny_config.rl.iterations
    assert len(run["warm_curve"]) == len(run["scratch_curve"]) == iterations
    assert all(math.isfinite(v) for v in run["warm_curve"] + run["scratch_curve"])
    assert "warm start" in (out / "warm_start_gain.md").read_text()
    assert (out / "seed0" / "policy_learning.json").is_file()


def test_script_refuses_weights_of_another_policy_head(tiny_config, tmp_path):
    weights = _meta_weights(tiny_config, tmp_path / "meta.pt", head="factorised")
    out = tmp_path / "previous"
    out.mkdir()
    (out / "warm_start_gain.json").write_text("{}")
    before = directory_snapshot(out)
    args = ["--debug", "--out", str(out), "--meta-weights", str(weights)]
    args += ["--set", f"data.root={tiny_config.data.root}"]
    result = run_script(
        "scripts/warm_start_gain.py", *args, timeout_s=120, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode != 0
    assert "rl.policy_head" in result.stderr, result.stderr
    assert directory_snapshot(out) == before
