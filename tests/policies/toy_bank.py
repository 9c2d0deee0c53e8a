"""A hand-made decision bank with a planted per-sample rule, and PPO on it, for the bank-PPO
and score tests.

Observation ``x`` (4 values, N(0, 1)); the value of level l is ``+1`` where ``x_l > 0`` and ``−1``
otherwise, so each context's best subset is exactly the levels with ``x_l > 0`` (at λ = 0) and no
static subset does well. Image ids are ``index // 2`` (two contexts per image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.decision_bank import DecisionBank
from envs.registration import BANK_ENV_NAME
from policies.level_policy_module import LevelSelectionModule
from policies.ppo_setup import train_policy
from policies.weights import module_from_state, module_state
from tests.policies import toy_config

TOY_BANK_OBS_DIM = 4
TOY_COSTS = np.linspace(0.0, 1.0, 16)


def toy_bank(contexts: int = 2000, seed: int = 0, noise: float = 0.0) -> DecisionBank:
    """The planted-rule bank (module docstring), with optional Gaussian noise on the values."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(contexts, TOY_BANK_OBS_DIM)).astype(np.float32)
    values = np.where(observations > 0, 1.0, -1.0) + noise * rng.normal(size=(contexts, 4))
    return DecisionBank(
        observations=observations,
        level_values=values,
        image_ids=np.arange(contexts, dtype=np.int64) // 2,
        progress=np.zeros(contexts),
        updates=np.arange(contexts, dtype=np.int64),
        subset_costs=TOY_COSTS,
        metadata={"toy": True},
    )


def saved_toy_bank(directory: Path, **kwargs) -> Path:
    """``toy_bank(**kwargs)`` saved as ``<directory>/toy_bank.npz``."""
    return toy_bank(**kwargs).save(Path(directory) / "toy_bank.npz")


def bank_env_config(
    path: Path, heldout_images: np.ndarray, value_unit: float = 1.0, seed: int = 0
) -> dict[str, Any]:
    """env_config of the bank env on the bank file ``path`` at λ = 0, never serving
    ``heldout_images``."""
    return {
        "bank_file": str(path),
        "heldout_images": [int(i) for i in heldout_images],
        "lam": 0.0,
        "value_unit": value_unit,
        "seed": seed,
    }


def train_on_bank(env_config: dict[str, Any], iterations: int, **options: Any):
    """``train_policy`` on the bank env, without a progress bar, of the toy config at 2048
    decisions an iteration in six epochs of 512 (lr 3e-3, no entropy bonus); ``options``:
    checkpoint_dir, evaluate. Returns (algorithm, history)."""
    config = toy_config(
        train_batch_size=2048, minibatch_size=512, num_epochs=6, lr=3e-3, entropy_coeff=0.0
    )
    return train_policy(
        config, env_config, iterations=iterations, progress=False, env_name=BANK_ENV_NAME, **options
    )


def toy_bank_module(algo) -> LevelSelectionModule:
    """The joint [32] policy module of a PPO run on a toy bank, from its current weights."""
    return module_from_state(module_state(algo), TOY_BANK_OBS_DIM, [32], "joint")
