"""Fixtures of the policy tests: one small local Ray per test module, with the toy env registered."""

from __future__ import annotations

import pytest
import ray

from tests.policies import register_toy_env


@pytest.fixture(scope="module")
def ray_session():
    """``ray.init(num_cpus=2)`` for the module's tests (explicit CPUs: PPO hangs on defaults)."""
    if ray.is_initialized():  # a Ray another module's test left running, with other resources
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_toy_env()
    yield
    ray.shutdown()
