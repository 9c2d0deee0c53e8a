"""Moving the shared policy's weights: into and out of an RLlib algorithm, and to and from a file.

RLlib keeps two copies of an RLModule: the learner's (trained) and each env runner's (acting). A
warm start must reach both, otherwise the first PPO iteration samples with the random init: so
``load_module_weights`` sets the learner group and then lets RLlib copy the learner's weights into
every env runner (the local one included) with ``EnvRunnerGroup.sync_weights``, as RLlib itself
does after each update and after ``Algorithm.restore_from_path``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm

from policies.level_policy_module import (
    DEFAULT_HIDDEN_SIZES,
    SHARED_MODULE_ID,
    LevelSelectionModule,
    build_level_module,
)
from rlpkd.checkpoint_io import load_checkpoint, save_checkpoint_atomic
from rlpkd.errors import CheckpointError

__all__ = [
    "ModuleState",
    "WeightsFile",
    "to_torch_state",
    "module_state",
    "load_module_weights",
    "env_runner_module_state",
    "save_weights_file",
    "read_weights_file",
    "module_from_state",
    "module_from_weights_file",
]

ModuleState = dict[str, torch.Tensor]
"""A module's ``state_dict``: parameter name -> CPU tensor."""

WEIGHTS_FORMAT = "rlpkd-level-policy-v1"


def to_torch_state(state: Mapping[str, Any]) -> ModuleState:
    """CPU float tensors of a state dict whose values are tensors or numpy arrays."""
    return {
        name: (
            value.detach().cpu().clone()
            if isinstance(value, torch.Tensor)
            else torch.tensor(np.asarray(value))
        ).contiguous()
        for name, value in state.items()
    }


def module_state(algo: Algorithm, module_id: str = SHARED_MODULE_ID) -> ModuleState:
    """The learner group's (i.e. the trained) weights of the shared module."""
    weights = algo.learner_group.get_weights(module_ids=[module_id])
    return to_torch_state(weights[module_id])


def load_module_weights(
    algo: Algorithm, state: Mapping[str, Any], module_id: str = SHARED_MODULE_ID
) -> None:
    """Set the shared module's weights on the learner group and on every env runner of an
    algorithm that has not trained yet (a warm start).

    The learner's optimizer keeps its parameter tensors (weights are copied in place). Raises
    CheckpointError when ``state`` does not match the module's parameter names and shapes, and
    ValueError for an algorithm that has trained: RLlib's weight sync skips an env runner that
    already acts with the learner's current weight version (``weights_seq_no``), and setting
    the learner's weights does not advance that version.
    """
    if algo.iteration > 0:
        raise ValueError(
            f"load_module_weights needs an untrained algorithm (this one ran {algo.iteration} "
            "iterations): its env runners would keep their weights"
        )
    current = module_state(algo, module_id)
    _check_compatible(current, state)
    numpy_state = {name: np.asarray(to_torch_state({name: v})[name]) for name, v in state.items()}
    algo.learner_group.set_weights({module_id: numpy_state})
    # Wait for the remote env runners to hold the weights (RLlib's default is fire-and-forget;
    # in a full test run a remote runner was seen acting with fresh weights afterwards).
    algo.env_runner_group.sync_weights(
        policies=[module_id],
        from_worker_or_learner_group=algo.learner_group,
        inference_only=True,
        timeout_seconds=120.0,
    )


def env_runner_module_state(
    algo: Algorithm, module_id: str = SHARED_MODULE_ID
) -> list[ModuleState]:
    """The weights every env runner acts with (the local runner first, when it has a module)."""

    def _get_env_runner_module(env_runner: Any) -> dict[str, Any] | None:
        module = getattr(env_runner, "module", None)
        if module is None:
            return None
        return module[module_id].get_state()

    states = algo.env_runner_group.foreach_env_runner(_get_env_runner_module, local_env_runner=True)
    return [to_torch_state(state) for state in states if state is not None]


def _check_compatible(reference: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise CheckpointError(
            "policy weights do not match the level-selection module "
            f"(missing {missing or 'none'}, unexpected {unexpected or 'none'}); "
            "were they saved for another rl.hidden_sizes or rl.policy_head?"
        )
    for name, value in reference.items():
        shape = tuple(np.shape(state[name]))
        if shape != tuple(value.shape):
            raise CheckpointError(
                f"policy weight '{name}' has shape {shape}, the module expects "
                f"{tuple(value.shape)}; were the weights saved for another observation size "
                "or rl.hidden_sizes or rl.policy_head?"
            )


@dataclass
class WeightsFile:
    """A module-weights checkpoint: the state dict and what is needed to rebuild the module."""

    state: ModuleState
    """Parameter name -> tensor."""
    obs_dim: int
    """Observation size the module was built for."""
    hidden_sizes: list[int]
    """MLP hidden layers."""
    policy_head: str
    """``rl.policy_head`` the module was built with (``joint`` for files from before it)."""
    metadata: dict[str, Any]
    """Free-form facts (tasks, iterations, ...), plain Python values."""


def save_weights_file(
    path: Path,
    state: Mapping[str, Any],
    obs_dim: int,
    hidden_sizes: Sequence[int],
    metadata: dict[str, Any] | None = None,
    policy_head: str = "joint",
) -> Path:
    """Atomically ``torch.save`` a module-weights checkpoint (loadable with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "module_id": SHARED_MODULE_ID,
        "state": to_torch_state(state),
        "obs_dim": int(obs_dim),
        "hidden_sizes": [int(h) for h in hidden_sizes],
        "policy_head": str(policy_head),
        "metadata": dict(metadata or {}),
    }
    return save_checkpoint_atomic(path, payload)


def read_weights_file(path: Path) -> WeightsFile:
    """Read a module-weights checkpoint written by ``save_weights_file``.

    Raises:
        CheckpointError: the file is missing, truncated or not a level-policy weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"policy weights not found: {path} (build them with scripts/meta_train.py)"
        )
    payload = load_checkpoint(path, "policy weights", required_keys=("format",))
    if payload["format"] != WEIGHTS_FORMAT:
        raise CheckpointError(
            f"{path} is not a level-policy weights file (no '{WEIGHTS_FORMAT}' tag)"
        )
    missing = [key for key in ("state", "obs_dim") if key not in payload]
    if missing:
        raise CheckpointError(f"policy weights {path} lack {', '.join(missing)}; delete the file")
    return WeightsFile(
        state=to_torch_state(payload["state"]),
        obs_dim=int(payload["obs_dim"]),
        hidden_sizes=list(payload.get("hidden_sizes", DEFAULT_HIDDEN_SIZES)),
        policy_head=str(payload.get("policy_head", "joint")),
        metadata=dict(payload.get("metadata", {})),
    )


def module_from_state(
    state: Mapping[str, Any], obs_dim: int, hidden_sizes: Sequence[int], policy_head: str
) -> LevelSelectionModule:
    """A stand-alone LevelSelectionModule (eval mode) holding ``state``.

    Raises:
        CheckpointError: ``state`` does not fit a module of that size and head.
    """
    module = build_level_module(obs_dim, hidden_sizes, policy_head)
    state = to_torch_state(state)
    _check_compatible(to_torch_state(module.state_dict()), state)
    module.load_state_dict(state)
    return module.eval()


def module_from_weights_file(path: Path) -> LevelSelectionModule:
    """A stand-alone LevelSelectionModule (eval mode) with the weights stored at ``path``."""
    weights = read_weights_file(path)
    return module_from_state(
        weights.state, weights.obs_dim, weights.hidden_sizes, weights.policy_head
    )
