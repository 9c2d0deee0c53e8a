"""Every script runs with ``--debug`` and no other flag, and no script's debug run overwrites
another's (each writes its own ``runs/debug-<script>``; ``train_rl`` and ``train_teacher`` share
``runs/debug``, the run ``make debug`` makes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import config_argument_parser, config_from_args

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_every_script_takes_debug(script):
    source = script.read_text()
    markers = ("config_argument_parser(", "add_path_or_debug(", '"--debug"')
    assert any(marker in source for marker in markers), script.name


def test_debug_runs_go_to_the_scripts_own_directory():
    parser = config_argument_parser("x", debug_out="runs/debug-headroom")
    config = config_from_args(parser.parse_args(["--debug"]), check_inputs=False)
    assert config.runtime.out == "runs/debug-headroom"
    given = config_from_args(
        parser.parse_args(["--debug", "--out", "elsewhere"]), check_inputs=False
    )
    assert given.runtime.out == "elsewhere"
    shared = config_from_args(
        config_argument_parser("x").parse_args(["--debug"]), check_inputs=False
    )
    assert shared.runtime.out == "runs/debug"
    owners = [s.stem for s in SCRIPTS if 'debug_out="runs/debug-' in s.read_text()]
    outs = [f"runs/debug-{name.replace('_', '-')}" for name in owners]
    assert len(set(outs)) == len(outs)


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--debug"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_scripts_without_a_config_run_with_debug_alone(tmp_path):
    made = _run("make_dataset.py", tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (tmp_path / "runs" / "debug-dataset" / "annotations" / "train.json").is_file()
    # the report of a debug sweep that has not run yet: one line saying which command makes it
    report = _run("report.py", tmp_path)
    assert report.returncode == 2
    assert report.stderr.strip().splitlines() == [
        "error: no sweep directory at runs/debug-sweep; scripts/sweep.py --debug"
    ]
