"""The level-selection policy: one RLModule shared by every sample slot of a distillation batch.

Each sample is one decision (DESIGN §5): its observation goes through an MLP encoder, a policy head
gives 16 logits (one per subset of {P2, P3, P4, P5}; bit i of the action = ``LEVELS[i]`` chosen) and a
value head gives the PPO baseline. The action distribution is a categorical over the 16 subsets, set
explicitly because RLlib has no distribution for ``MultiBinary``.

Two policy heads (``rl.policy_head``):

- ``joint``: 16 free logits, one per subset.
- ``factorised``: 4 logits ``u_l``, one per level; subset ``a`` gets ``Σ_l a_l u_l``. A softmax
  over these 16 logits is exactly the product of 4 independent Bernoullis with
  ``P(l ∈ a) = sigmoid(u_l)``, so the action space stays ``Discrete(16)`` while a reward that
  follows from level l moves ``u_l`` for all 8 subsets holding l at once (with the joint head it
  moves only the one sampled subset's logit).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rlpkd.errors import ConfigError
from rlpkd.levels import NUM_LEVELS, NUM_SUBSETS, subsets_to_masks

__all__ = [
    "SHARED_MODULE_ID",
    "DEFAULT_HIDDEN_SIZES",
    "POLICY_HEADS",
    "LevelSelectionModule",
    "build_level_module",
]


class RLModuleConfigNotice(logging.Filter):
    """Drops RLlib 2.60's "`RLModule(config=[RLModuleConfig object])` has been deprecated"
    warning. This module is built the new way (``observation_space``, ``action_space``,
    ``inference_only``, ``model_config``); the warning comes from ``RLModule.__init__`` itself,
    which builds an ``RLModuleConfig`` for every module however it is constructed
    (ray/rllib/core/rl_module/rl_module.py, "TODO (sven): Deprecate this"). Any other RLlib
    deprecation still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for exactly that warning."""
        return "RLModule(config=[RLModuleConfig" not in record.getMessage()


logging.getLogger("ray._common.deprecation").addFilter(RLModuleConfigNotice())

SHARED_MODULE_ID = "shared_level_policy"
"""The one RLModule id every agent slot maps to."""
DEFAULT_HIDDEN_SIZES: tuple[int, ...] = (64, 64)
"""MLP hidden layers when ``model_config`` names none."""
POLICY_HEADS = ("joint", "factorised")
"""``rl.policy_head`` choices (see the module docstring); ``joint`` when ``model_config`` names none."""


def _model_config_value(model_config: Any, key: str, default: Any) -> Any:
    if isinstance(model_config, dict):
        return model_config.get(key, default)
    return getattr(model_config, key, default)


def _mlp(in_dim: int, hidden_sizes: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        linear = nn.Linear(in_dim, int(width))
        nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2.0)))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
        in_dim = int(width)
    return nn.Sequential(*layers), in_dim


class LevelSelectionModule(TorchRLModule, ValueFunctionAPI):
    """MLP encoder, a 16-way policy head over level subsets and a value head (for PPO).

    ``model_config`` keys: ``hidden_sizes`` (list of MLP widths, default ``[64, 64]``) and
    ``policy_head`` (``joint`` or ``factorised``, see the module docstring; default ``joint``).
    The policy head starts near zero (orthogonal init with gain 0.01), so an untrained policy picks
    every subset with about equal probability.
    """

    def setup(self) -> None:
        """Build the encoder and the two heads from the spaces and ``model_config``."""
        hidden = list(_model_config_value(self.model_config, "hidden_sizes", DEFAULT_HIDDEN_SIZES))
        self.policy_head = str(_model_config_value(self.model_config, "policy_head", "joint"))
        if self.policy_head not in POLICY_HEADS:
            raise ConfigError(
                f"rl.policy_head={self.policy_head!r} is not one of {', '.join(POLICY_HEADS)}"
            )
        in_dim = int(np.prod(self.observation_space.shape))
        self._encoder, width = _mlp(in_dim, hidden)
        outputs = int(self.action_space.n)
        if self.policy_head == "factorised":
            outputs = NUM_LEVELS
            # [16, 4] membership: row a holds bit l of subset a (not a parameter, not saved).
            self.register_buffer(
                "_subset_levels", subsets_to_masks(torch.arange(NUM_SUBSETS)).float(), False
            )
        self._policy_head = nn.Linear(width, outputs)
        nn.init.orthogonal_(self._policy_head.weight, gain=0.01)
        nn.init.zeros_(self._policy_head.bias)
        self._value_head = nn.Linear(width, 1)
        nn.init.orthogonal_(self._value_head.weight, gain=1.0)
        nn.init.zeros_(self._value_head.bias)

    def _embed(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return self._encoder(obs.reshape(obs.shape[0], -1).float())

    def _subset_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        head = self._policy_head(embeddings)
        if self.policy_head == "factorised":
            return head @ self._subset_levels.T  # logit(a) = Σ_l a_l u_l
        return head

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Logits of the 16 level subsets (inference and exploration)."""
        return {Columns.ACTION_DIST_INPUTS: self._subset_logits(self._embed(batch))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Logits plus the encoder embeddings, which ``compute_values`` reuses."""
        embeddings = self._embed(batch)
        return {
            Columns.ACTION_DIST_INPUTS: self._subset_logits(embeddings),
            Columns.EMBEDDINGS: embeddings,
        }

    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """State values V(obs), shape [B]."""
        if embeddings is None:
            embeddings = self._embed(batch)
        return self._value_head(embeddings).squeeze(-1)

    def get_inference_action_dist_cls(self) -> type[TorchCategorical]:
        """Categorical over the 16 subsets (greedy = its argmax)."""
        return TorchCategorical

    def get_exploration_action_dist_cls(self) -> type[TorchCategorical]:
        """Categorical over the 16 subsets."""
        return TorchCategorical

    def get_train_action_dist_cls(self) -> type[TorchCategorical]:
        """Categorical over the 16 subsets."""
        return TorchCategorical

    @torch.no_grad()
    def subset_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits [B, 16] for a batch of observations [B, obs_dim] (no RLlib batch dict)."""
        return self._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]


def build_level_module(
    obs_dim: int, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES, policy_head: str = "joint"
) -> LevelSelectionModule:
    """A stand-alone module (outside RLlib) for ``obs_dim``-dimensional observations."""
    return LevelSelectionModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        action_space=gym.spaces.Discrete(NUM_SUBSETS),
        inference_only=False,
        model_config={"hidden_sizes": list(hidden_sizes), "policy_head": policy_head},
    )
