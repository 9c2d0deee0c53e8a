"""Where PPO's learner gets its GPU (``rl.num_gpus_per_learner``), checked before RLlib starts.

What RLlib 2.60 does with ``num_gpus_per_learner > 0`` (``TorchLearner.build`` ->
``ray.rllib.utils.framework.get_device``):

- ``rl.num_learners=0``: one local learner in the process that builds PPO, which asks Ray for
  no GPU. In a driver it takes ``cuda:<local_gpu_idx>`` and, without CUDA, stops with
  "AssertionError: local_gpu_idx 0 is not a valid GPU ID or is not available". In a Ray worker
  (a Tune trial) it takes the worker's device: ``cuda:0`` when Ray assigned the worker a GPU
  (without CUDA, moving the module there fails), the CPU when Ray assigned none: the setting
  is then silently ignored.
- ``rl.num_learners>=1``: each learner is a Ray Train worker actor holding the GPU bundle; Ray
  assigns it a GPU (``CUDA_VISIBLE_DEVICES``), Ray Train's torch backend then opens an NCCL
  process group, which without CUDA stops with "ValueError: ProcessGroupNCCL is only supported
  with GPUs, no GPUs found!".

RLlib has no CPU fallback for a learner that was given a GPU, so the platform states it first:
``check_learner_gpus`` raises a one-line ConfigError when the learner would see no CUDA device
(or, with the local learner in a Ray worker that holds no GPU, would silently learn on the CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
import torch

from rlpkd.config import Config
from rlpkd.errors import ConfigError, ResourceError

__all__ = [
    "CudaSight",
    "cuda_sight",
    "learner_gpu_problem",
    "learner_cuda_sight",
    "check_learner_gpus",
]


@dataclass(frozen=True)
class CudaSight:
    """What one process is given and sees: the GPU ids Ray assigned it, ``CUDA_VISIBLE_DEVICES``
    (None when unset) and whether torch sees a CUDA device."""

    gpu_ids: tuple[int | str, ...]
    cuda_visible_devices: str | None
    cuda_available: bool


def cuda_sight() -> CudaSight:
    """``CudaSight`` of this process (no GPU ids outside Ray)."""
    ids = ray.get_gpu_ids() if ray.is_initialized() else []
    return CudaSight(
        tuple(int(i) if str(i).isdigit() else str(i) for i in ids),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        torch.cuda.is_available(),
    )


def _in_ray_worker() -> bool:
    """Whether this process runs a Ray task or actor (a Tune trial), not a driver."""
    return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None


def learner_cuda_sight(num_learners: int, num_gpus_per_learner: float) -> CudaSight:
    """``CudaSight`` where RLlib would put a learner: this process for ``num_learners=0``, else
    a Ray task holding one learner's resources (``num_gpus_per_learner`` GPUs, no CPU), scheduled
    as RLlib schedules learners (outside the caller's placement group, e.g. a Tune trial's)."""
    if num_learners == 0:
        return cuda_sight()
    probe = ray.remote(num_cpus=0, num_gpus=num_gpus_per_learner)(cuda_sight)
    return ray.get(probe.options(scheduling_strategy="DEFAULT").remote())


def learner_gpu_problem(
    num_learners: int,
    num_gpus_per_learner: float,
    learner: CudaSight,
    in_ray_worker: bool,
) -> str:
    """Why PPO's learner cannot use ``rl.num_gpus_per_learner`` GPUs ('' when it can).

    Args:
        num_learners: ``rl.num_learners`` (0: the local learner, in the process building PPO).
        num_gpus_per_learner: ``rl.num_gpus_per_learner``.
        learner: what the learner's process is given and sees (``learner_cuda_sight``).
        in_ray_worker: whether the process building PPO is a Ray worker (a Tune trial).

    Returns:
        '' when no GPU is asked for or the learner sees CUDA; else one line saying what is
        wrong and how to fix it.
    """
    if num_gpus_per_learner <= 0:
        return ""
    asked = f"rl.num_gpus_per_learner is {num_gpus_per_learner:g}"
    if num_learners == 0 and in_ray_worker and not learner.gpu_ids:
        return (
            f"{asked} with rl.num_learners=0, so PPO learns in this Ray worker, which holds no "
            "GPU (e.g. sweep.trial_gpus=0) and RLlib would learn on the CPU; give the trial a "
            "GPU (sweep.trial_gpus), set rl.num_learners=1, or set rl.num_gpus_per_learner=0"
        )
    if learner.cuda_available:
        return ""
    if num_learners == 0:
        where = "this process (rl.num_learners=0: PPO learns here)"
    else:
        where = "a learner's Ray worker"
    if learner.gpu_ids:
        where += f", which Ray assigned GPU {', '.join(str(i) for i in learner.gpu_ids)},"
    return (
        f"{asked} but {where} sees no CUDA device, and RLlib cannot fall back to the CPU; set "
        "rl.num_gpus_per_learner=0 to learn on the CPU, or run where torch sees CUDA"
    )


def check_learner_gpus(config: Config) -> None:
    """Fail in one line when PPO's learner cannot use ``rl.num_gpus_per_learner``; with
    ``rl.num_learners >= 1`` this waits for a node with that many free GPUs, as RLlib's learner
    would. Ray must be running.

    Raises:
        ConfigError: the learner would see no CUDA device (``learner_gpu_problem``).
        ResourceError: remote learners ask for more GPUs than one node of the cluster has
            (RLlib would wait for them forever).
    """
    rl = config.rl
    if rl.num_gpus_per_learner <= 0:
        return
    if rl.num_learners > 0:
        most = max(
            (node["Resources"].get("GPU", 0.0) for node in ray.nodes() if node["Alive"]),
            default=0.0,
        )
        if most < rl.num_gpus_per_learner:
            raise ResourceError(
                f"rl.num_gpus_per_learner is {rl.num_gpus_per_learner:g} but no node of the Ray "
                f"cluster has that many GPUs (at most {most:g}); RLlib would wait for them "
                "forever; set rl.num_gpus_per_learner=0 or join a cluster that has them"
            )
    learner = learner_cuda_sight(rl.num_learners, rl.num_gpus_per_learner)
    problem = learner_gpu_problem(
        rl.num_learners, rl.num_gpus_per_learner, learner, _in_ray_worker()
    )
    if problem:
        raise ConfigError(problem)
