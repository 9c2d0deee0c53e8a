"""Fixtures of the policy tests: one small local Ray per test module, with the toy env registered."""

from __future__ import annotations

import pytest
import ray

from tests.conftest import fresh_local_ray
from tests.policies import register_toy_env


@pytest.fixture(scope="module")
def ray_session():
    """``ray.init(num_cpus=2)`` for the module's tests (explicit CPUs: PPO hangs on defaults)."""
    fresh_local_ray()
    register_toy_env()
    yield
    ray.shutdown()
