"""A supervised predictor of the level values from the observation: the observation's ceiling.

A policy sees only the observation. Whatever per-sample structure it can learn, a regression of
the values ``v_il / s`` on the observation can also find, given the same training contexts; the
subset that maximises the *predicted* reward is then what the observation can tell a policy. Its
held-out score (``policies.heldout_score``) is the ceiling to compare the policy with.

Candidates, fitted on the training contexts and compared on a validation part of them (a seeded
fifth of their *images*, so no image is on both sides) by the per-context score of the subsets
they pick (``policies.choice_scores.per_context_score``: every context weighs the same, as the
values are heavy-tailed), not by squared error: what matters is the choice.

- the constant: the training contexts' mean values, i.e. the best static subset (so the
  predictor is never a worse guess than ignoring the observation, up to validation noise);
- ridge regression (Hoerl & Kennard, 1970) on standardised observations, one output per level,
  its penalty chosen on the validation part, then refitted on all training contexts;
- a small MLP (the policy's own encoder shape) trained by squared error with early stopping on
  the validation part.

The best one on the validation part is the predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from envs.decision_bank import SUBSET_LEVELS
from policies.choice_scores import per_context_score

__all__ = [
    "RIDGE_PENALTIES",
    "VALIDATION_FRACTION",
    "ValuePredictor",
    "ConstantValuePredictor",
    "RidgeValuePredictor",
    "MLPValuePredictor",
    "fit_value_predictor",
    "best_subsets",
]

RIDGE_PENALTIES: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
"""The ridge penalties the validation part chooses from (on standardised observations)."""
VALIDATION_FRACTION = 0.2
"""Share of the training contexts' images the predictors are compared (and stopped) on."""
MLP_EPOCHS = 150
MLP_CHECK_EVERY = 5


def best_subsets(level_values: np.ndarray, lam: float, subset_costs: np.ndarray) -> np.ndarray:
    """[N] the subset maximising ``Σ_{l∈a} v_l − λ · cost(a)`` for each row of ``level_values``
    [N, 4] (in units of ``s``)."""
    return np.argmax(level_values @ SUBSET_LEVELS.T - lam * subset_costs[None, :], axis=1)


class ValuePredictor(Protocol):
    """Predicts ``v / s`` [N, 4] from observations [N, obs_dim]."""

    kind: str

    def predict(self, observations: np.ndarray) -> np.ndarray:
        """[N, 4] predicted ``v_il / s``."""


def _standardiser(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(observations, dtype=np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


@dataclass
class RidgeValuePredictor:
    """``v / s ≈ standardise(obs) @ weights + bias`` (one column per level)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    penalty: float
    """The ridge penalty the validation part chose."""
    kind: str = "ridge"

    def predict(self, observations: np.ndarray) -> np.ndarray:
        """[N, 4] predicted ``v_il / s``."""
        return ((observations - self.mean) / self.scale) @ self.weights + self.bias


def _fit_ridge(
    observations: np.ndarray, targets: np.ndarray, penalty: float
) -> RidgeValuePredictor:
    mean, scale = _standardiser(observations)
    z = (np.asarray(observations, dtype=np.float64) - mean) / scale
    bias = targets.mean(axis=0)
    gram = z.T @ z + penalty * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, z.T @ (targets - bias))
    return RidgeValuePredictor(mean, scale, weights, bias, penalty)


class MLPValuePredictor:
    """A tanh MLP from standardised observations to ``v / s``."""

    kind = "mlp"

    def __init__(self, network: nn.Module, mean: np.ndarray, scale: np.ndarray) -> None:
        self.network = network.eval()
        self.mean, self.scale = mean, scale

    @torch.no_grad()
    def predict(self, observations: np.ndarray) -> np.ndarray:
        """[N, 4] predicted ``v_il / s``."""
        z = torch.as_tensor((observations - self.mean) / self.scale, dtype=torch.float32)
        return self.network(z).double().numpy()


def _mlp(in_dim: int, hidden_sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, int(width)), nn.Tanh()]
        in_dim = int(width)
    return nn.Sequential(*layers, nn.Linear(in_dim, 4))


@dataclass
class ConstantValuePredictor:
    """The training contexts' mean ``v / s`` for every observation: the best static subset."""

    mean: np.ndarray
    kind: str = "constant"

    def predict(self, observations: np.ndarray) -> np.ndarray:
        """[N, 4] the mean values, whatever the observation."""
        return np.repeat(self.mean[None, :], len(observations), axis=0)


def _earned(
    predictor: ValuePredictor, observations: np.ndarray, table: np.ndarray, lam: float, costs
) -> float:
    """The per-context score of ``predictor``'s choices on ``table``'s contexts."""
    return per_context_score(table, best_subsets(predictor.predict(observations), lam, costs))


def _fit_mlp(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    lam: float,
    costs: np.ndarray,
    hidden_sizes: Sequence[int],
    seed: int,
) -> tuple[MLPValuePredictor, float]:
    """Adam on squared error, minibatches of 256; the weights of the epoch whose validation
    choices earned most."""
    observations, targets = train
    mean, scale = _standardiser(observations)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = _mlp(observations.shape[1], hidden_sizes)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.as_tensor((observations - mean) / scale, dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.float32)
    val_table = validation[1] @ SUBSET_LEVELS.T - lam * costs[None, :]
    predictor = MLPValuePredictor(network, mean, scale)
    best_state, best_reward = None, -np.inf
    for epoch in range(1, MLP_EPOCHS + 1):
        network.train()
        for batch in torch.randperm(len(x), generator=generator).split(256):
            optimizer.zero_grad()
            loss = ((network(x[batch]) - y[batch]) ** 2).mean()
            loss.backward()
            optimizer.step()
        if epoch % MLP_CHECK_EVERY == 0:
            network.eval()
            reward = _earned(predictor, validation[0], val_table, lam, costs)
            if reward > best_reward:
                best_reward = reward
                best_state = {k: v.clone() for k, v in network.state_dict().items()}
    network.load_state_dict(best_state)
    return MLPValuePredictor(network, mean, scale), best_reward


def fit_value_predictor(
    observations: np.ndarray,
    level_values: np.ndarray,
    image_ids: np.ndarray,
    lam: float,
    subset_costs: np.ndarray,
    hidden_sizes: Sequence[int] = (64, 64),
    seed: int = 0,
) -> ValuePredictor:
    """The better of ridge and MLP (module docstring) on the training contexts:
    ``level_values`` [N, 4] in units of ``s``; the validation part is a seeded
    ``VALIDATION_FRACTION`` of ``image_ids``."""
    targets = np.asarray(level_values, dtype=np.float64)
    images = np.unique(image_ids)
    count = min(max(1, round(VALIDATION_FRACTION * len(images))), len(images) - 1)
    held = np.isin(image_ids, np.random.default_rng(seed).permutation(images)[:count])
    if held.all() or not held.any():  # one image: validate on the training contexts
        held = np.ones(len(targets), dtype=bool)
    fit, check = ~held if not held.all() else held, held
    table = targets[check] @ SUBSET_LEVELS.T - lam * subset_costs[None, :]
    ridge_rewards = {
        penalty: _earned(
            _fit_ridge(observations[fit], targets[fit], penalty),
            observations[check],
            table,
            lam,
            subset_costs,
        )
        for penalty in RIDGE_PENALTIES
    }
    penalty = max(ridge_rewards, key=ridge_rewards.get)
    mlp, mlp_reward = _fit_mlp(
        (observations[fit], targets[fit]),
        (observations[check], targets[check]),
        lam,
        subset_costs,
        hidden_sizes,
        seed,
    )
    constant = ConstantValuePredictor(targets.mean(axis=0))
    constant_reward = _earned(constant, observations[check], table, lam, subset_costs)
    best = max(constant_reward, ridge_rewards[penalty], mlp_reward)
    if constant_reward == best:
        return constant
    if mlp_reward == best and mlp_reward > ridge_rewards[penalty]:
        return mlp
    return _fit_ridge(observations, targets, penalty)
