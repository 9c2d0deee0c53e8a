"""A hand-made decision bank with a planted per-sample rule, for the bank-PPO and score tests.

Observation ``x`` (4 values, N(0, 1)); the value of level l is ``+1`` where ``x_l > 0`` and ``−1``
otherwise, so each context's best subset is exactly the levels with ``x_l > 0`` (at λ = 0) and no
static subset does well. Image ids are ``index // 2`` (two contexts per image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.decision_bank import DecisionBank

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
