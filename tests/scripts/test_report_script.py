"""scripts/report.py: a one-line error on a missing sweep, the report files on a good one."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import run_script
from tests.report import make_sweep

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_script("scripts/report.py", *args)


def test_missing_sweep_dir_is_one_line_and_exit_two(tmp_path):
    result = _run("--sweep", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dir_without_trials_is_one_line_and_exit_two(tmp_path):
    result = _run("--sweep", str(tmp_path))
    assert result.returncode == 2
    assert "trials" in result.stderr and "Traceback" not in result.stderr


def test_good_sweep_writes_the_report(tmp_path):
    sweep = make_sweep(tmp_path)
    result = _run("--sweep", str(sweep), "--lam", "0.084")
    assert result.returncode == 0, result.stderr
    assert "| method | seeds | AP |" in result.stdout and "score (λ=0.084) %" in result.stdout
    assert str(sweep / "report.md") in result.stdout
    for name in ("report.json", "report.md", "results.csv", "plots/pareto.png"):
        assert (sweep / name).is_file(), name
    assert "best static subset: P3,P4" in (sweep / "report.md").read_text()
