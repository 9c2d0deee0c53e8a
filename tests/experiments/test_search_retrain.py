"""A search end to end (scripts/search_nas.py's library call): search, retrain the pick, report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.search_retrain import run_search_experiment
from rlpkd.config import apply_overrides, config_from_dict, config_to_dict
from rlpkd.levels import parse_levels
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def test_search_experiment_retrains_the_pick_and_reports_the_search_cost(tiny_config, tmp_path):
    values = apply_overrides(
        config_to_dict(tiny_config),
        ["search.random_samples=2", "search.fitness_epochs=1", f"runtime.out={tmp_path / 'nas'}"],
    )
    config = config_from_dict(values)
    metrics = run_search_experiment(config, "random", seed=0)
    out = tmp_path / "nas"
    search = json.loads((out / "search.json").read_text())
    written = json.loads((out / "metrics.json").read_text())
    assert written["method"] == "random" and written["levels"] == search["levels_name"]
    # the student was retrained with exactly the searched subset
    expected = {
        level: 1.0 if level in parse_levels(search["levels_name"]) else 0.0
        for level in ("P2", "P3", "P4", "P5")
    }
    assert written["selection_rates"] == expected
    assert written["search_evaluations"] == search["cost"]["evaluations"] >= 1
    assert written["search_wall_time_s"] > 0 and written["search_kd_gflops"] >= 0
    assert (out / "predictions.json").is_file() and (out / "checkpoints" / "teacher.pt").is_file()
    assert metrics["AP"] == written["AP"]


def test_search_nas_rejects_an_unknown_method():
    result = subprocess.run(
        [sys.executable, "scripts/search_nas.py", "--method", "dart", "--debug"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "invalid choice: 'dart'" in result.stderr and "darts" in result.stderr
