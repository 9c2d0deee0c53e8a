"""Fixtures of the sweep tests: tiny sweeps of short static student runs on a small local Ray."""

from __future__ import annotations

import pytest
import ray

from rlpkd.config import load_config
from tests.conftest import REPO, fresh_local_ray, run_script, tiny_overrides

DEBUG_CONFIG = REPO / "configs" / "debug.yaml"


def tiny_sweep_overrides(data_root, out, *extra: str) -> list[str]:
    """``--set`` overrides of a tiny sweep: two static baselines ('none', 'all'), seed 0."""
    return [
        *tiny_overrides(data_root),
        f"runtime.out={out}",
        "sweep.rl_lams=[]",
        "sweep.nas_methods=[]",
        "sweep.static_grid=false",
        "sweep.baselines=[none,all]",
        "sweep.seeds=[0]",
        *extra,
    ]


def run_sweep_script(overrides: list[str], *args: str, timeout_s: float = 300):
    """scripts/sweep.py on the debug config with ``--set`` ``overrides`` and the options ``args``."""
    sets = [f"--set={item}" for item in overrides]
    return run_script(
        "scripts/sweep.py", "--config", str(DEBUG_CONFIG), *sets, *args, timeout_s=timeout_s
    )


@pytest.fixture
def make_sweep_config(tiny_data_root, tmp_path):
    """``make(*overrides, out=None)``: a tiny sweep config writing to ``tmp_path/'sweep'``."""

    def make(*extra: str, out=None):
        out = tmp_path / "sweep" if out is None else out
        return load_config(DEBUG_CONFIG, tiny_sweep_overrides(tiny_data_root, out, *extra))

    return make


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(num_cpus=2)`` for the module (run_sweep uses a Ray that is already running)."""
    fresh_local_ray()
    yield
    ray.shutdown()
