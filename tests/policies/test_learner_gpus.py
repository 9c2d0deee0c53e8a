"""PPO's learner GPU (``rl.num_gpus_per_learner``) on a node whose GPU is only logical: where Ray
places the learner, what RLlib 2.60 would do there, and the one line the platform says first."""

from __future__ import annotations

import pytest
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.utils.framework import get_device

from policies.learner_gpus import (
    CudaSight,
    check_learner_gpus,
    learner_cuda_sight,
    learner_gpu_problem,
)
from policies.ppo_setup import build_algorithm
from rlpkd.errors import ConfigError, ResourceError
from tests.policies import TOY_ENV_NAME, register_toy_env, toy_config, toy_env_config

without_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="shows what happens where CUDA is unavailable"
)

NO_GPU = CudaSight(gpu_ids=(), cuda_visible_devices=None, cuda_available=False)
GPU_0_NO_CUDA = CudaSight(gpu_ids=(0,), cuda_visible_devices="0", cuda_available=False)
GPU_0_CUDA = CudaSight(gpu_ids=(0,), cuda_visible_devices="0", cuda_available=True)


@pytest.mark.parametrize("learners", [0, 1])
def test_no_learner_gpu_asked_is_never_a_problem(learners):
    assert learner_gpu_problem(learners, 0.0, NO_GPU, in_ray_worker=True) == ""


@pytest.mark.parametrize("learners", [0, 1])
def test_a_learner_that_sees_cuda_may_have_its_gpu(learners):
    assert learner_gpu_problem(learners, 1.0, GPU_0_CUDA, in_ray_worker=True) == ""


def test_a_local_learner_in_a_driver_without_cuda_is_refused():
    problem = learner_gpu_problem(0, 1.0, NO_GPU, in_ray_worker=False)
    assert "this process (rl.num_learners=0" in problem and "sees no CUDA device" in problem
    assert "rl.num_gpus_per_learner=0" in problem


def test_a_local_learner_in_a_ray_worker_without_a_gpu_is_refused():
    # RLlib would take the worker's device, the CPU, and ignore rl.num_gpus_per_learner
    problem = learner_gpu_problem(0, 1.0, NO_GPU, in_ray_worker=True)
    assert "holds no GPU" in problem and "sweep.trial_gpus" in problem


def test_a_remote_learner_given_a_gpu_without_cuda_is_refused_naming_the_gpu():
    problem = learner_gpu_problem(1, 0.5, GPU_0_NO_CUDA, in_ray_worker=False)
    assert problem.startswith("rl.num_gpus_per_learner is 0.5 but a learner's Ray worker, ")
    assert "which Ray assigned GPU 0, sees no CUDA device" in problem


@pytest.fixture(scope="module")
def logical_gpu_ray():
    """A local Ray node with 4 logical CPUs and 1 logical GPU (no CUDA behind it)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    register_toy_env()
    yield
    ray.shutdown()


def _rllib_device_here() -> str:
    """The device RLlib 2.60's TorchLearner picks for ``num_gpus_per_learner=1`` here."""
    config = PPOConfig().framework("torch").learners(num_gpus_per_learner=1)
    try:
        return str(get_device(config, 1))
    except AssertionError as error:
        return f"AssertionError: {error}"


@pytest.mark.slow
@without_cuda
def test_what_rllib_does_with_a_learner_gpu_where_cuda_is_unavailable(logical_gpu_ray):
    # A local learner in the driver: no CPU fallback.
    assert _rllib_device_here().startswith("AssertionError: local_gpu_idx 0 is not a valid GPU")
    # A local learner in a Ray worker follows the worker's GPU: cuda:0 when Ray assigned one
    # (CUDA being unavailable, the module cannot move there), the CPU when it assigned none.
    in_gpu_worker = ray.remote(num_cpus=1, num_gpus=0.25)(_rllib_device_here)
    in_cpu_worker = ray.remote(num_cpus=1)(_rllib_device_here)
    assert ray.get([in_gpu_worker.remote(), in_cpu_worker.remote()]) == ["cuda:0", "cpu"]


def _assert_building_is_refused_in_one_line(num_learners: int, match: str) -> None:
    """Building PPO with one learner GPU and ``num_learners`` learners is one ConfigError line."""
    config = toy_config(num_learners=num_learners, num_gpus_per_learner=1.0)
    with pytest.raises(ConfigError, match=match) as error:
        build_algorithm(config, toy_env_config(config), TOY_ENV_NAME)
    assert "\n" not in str(error.value)


@pytest.mark.slow
@without_cuda
def test_a_remote_learner_is_placed_on_the_gpu_and_refused_in_one_line(logical_gpu_ray):
    # Where a learner with one GPU lands: Ray assigns it GPU 0 and shows it only that GPU.
    assert learner_cuda_sight(1, 1.0) == GPU_0_NO_CUDA
    _assert_building_is_refused_in_one_line(1, "which Ray assigned GPU 0, sees no CUDA")


@pytest.mark.slow
@without_cuda
def test_a_local_learner_gpu_without_cuda_is_refused_before_rllib_starts(logical_gpu_ray):
    # RLlib itself would stop with an AssertionError in TorchLearner.build: ours comes first.
    _assert_building_is_refused_in_one_line(0, "this process .* sees no CUDA device")


@pytest.mark.slow
@without_cuda
def test_more_learner_gpus_than_a_node_has_are_refused_instead_of_waiting(logical_gpu_ray):
    with pytest.raises(ResourceError, match="no node of the Ray cluster has that many GPUs"):
        check_learner_gpus(toy_config(num_learners=1, num_gpus_per_learner=2.0))


# A remote learner's own failure without CUDA (Ray Train's NCCL set-up: "ProcessGroupNCCL is only
# supported with GPUs") was pinned here once (2026-12-06) and is documented in docs/usage.md; it
# is not rerun in CI (a Ray Train worker group costs about 30 s on 2 cores), while the refusal
# that keeps a user from reaching it is (test_a_remote_learner_is_placed_on_the_gpu_...).
