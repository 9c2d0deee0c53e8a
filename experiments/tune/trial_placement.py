"""Where a sweep trial runs: its node, the GPUs Ray gave it, and the device it trains on.

A trial trains on the GPU Ray assigned it (``rlpkd.device_placement.placed_device``), or on the
CPU with a stated note when it asked for none or CUDA cannot see the one it got. Its metrics
record the placement, so a sweep's trials can be checked against the resources they asked for.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import torch

from policies.learner_gpus import cuda_sight
from rlpkd.config import Config
from rlpkd.device_placement import DevicePlacement, placed_device

__all__ = ["TrialPlacement", "trial_device", "place_trial"]


@dataclass(frozen=True)
class TrialPlacement:
    """A placed trial: its config (``runtime.device`` set to where it trains) and the record
    its metrics carry (``node_id``, ``gpu_ids``, ``cuda_visible_devices``, ``device``,
    ``device_note``)."""

    config: Config
    record: dict[str, Any]


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # a trial outside Ray has no node
        return ""


def trial_device(config: Config, gpu_ids: list[int | str]) -> DevicePlacement:
    """Where a trial trains: on no GPU when it asked for none (``sweep.trial_gpus`` 0), else
    where Ray's assignment ``gpu_ids`` and ``runtime.device`` put it (``placed_device``: with
    a GPU assigned and no CUDA visible, the CPU, and a note saying so)."""
    requested = config.runtime.device if config.sweep.trial_gpus > 0 else "cpu"
    return placed_device(requested, gpu_ids, torch.cuda.is_available())


def place_trial(trial_id: str, config: Config) -> TrialPlacement:
    """Place the trial ``trial_id`` of this process (``trial_device`` of Ray's GPU ids); a note
    (the trial is not on the GPU it got) is printed once to stderr as a warning."""
    sight = cuda_sight()
    gpu_ids = list(sight.gpu_ids)
    placement = trial_device(config, gpu_ids)
    if placement.note:
        print(f"warning: trial {trial_id}: {placement.note}", file=sys.stderr, flush=True)
    # every phase of the trial (the RL env too) reads the device from the config
    runtime = dataclasses.replace(config.runtime, device=str(placement.device))
    record = {
        "node_id": _node_id(),
        "gpu_ids": gpu_ids,
        "cuda_visible_devices": sight.cuda_visible_devices,
        "device": str(placement.device),
        "device_note": placement.note,
    }
    return TrialPlacement(dataclasses.replace(config, runtime=runtime), record)
