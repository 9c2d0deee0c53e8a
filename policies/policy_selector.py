"""Phase 3: the frozen learnt policy as a LevelSelector for policy-guided distillation.

For each sample the selector builds the same observation the env builds (``envs.observation``:
student pyramid statistics, the object-scale histogram, running KD gaps, progress, budget left),
which needs only the student and the annotations, never the teacher; the frozen module then picks
a level subset per sample (argmax, or a draw from its categorical).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from policies.level_policy_module import LevelSelectionModule, subset_bits
from policies.weights import module_from_weights_file
from rlpkd.data.batch import DetectionBatch
from rlpkd.levels import NUM_LEVELS

__all__ = ["ObservationFn", "PolicyLevels", "default_observation_fn"]

ObservationFn = Callable[
    [Any, DetectionBatch, torch.Tensor, float, float, Sequence[float]], torch.Tensor
]
"""(student, batch, running_gap [4], progress, budget_left, thresholds) -> observations [B, D]."""


def default_observation_fn() -> ObservationFn:
    """The env's own observation builder, ``envs.observation.sample_observations``."""
    from envs.observation import sample_observations

    return sample_observations


class PolicyLevels:
    """A LevelSelector (``.name``, ``.select(batch, progress)``) driven by a frozen policy.

    Args:
        module: The trained LevelSelectionModule (put in eval mode, gradients off).
        thresholds: ``data.level_thresholds`` (the scale histogram of the observation).
        student: The student being distilled, or None until ``set_student``.
        greedy: Argmax subset per sample; False draws from the policy's categorical.
        seed: Seed of the draws when ``greedy`` is False.
        running_gap: Initial running per-level KD gaps [4] shown in the observation; the caller
            keeps ``self.running_gap`` current the way the env does (zeros by default).
        budget_left: FLOPs budget left shown in the observation (``self.budget_left``).
        observe: Observation builder; defaults to ``envs.observation.sample_observations``.
        name: Method name in reports.
    """

    def __init__(
        self,
        module: LevelSelectionModule,
        thresholds: Sequence[float],
        student: torch.nn.Module | None = None,
        greedy: bool = True,
        seed: int = 0,
        running_gap: torch.Tensor | None = None,
        budget_left: float = 0.0,
        observe: ObservationFn | None = None,
        name: str = "policy",
    ) -> None:
        self.module = module.eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.student = student
        self.greedy = greedy
        self.running_gap = (
            torch.zeros(NUM_LEVELS) if running_gap is None else running_gap.detach().clone()
        )
        self.budget_left = float(budget_left)
        self.name = name if greedy else f"{name}:sampled"
        self._observe = observe
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_weights_file(
        cls, path: Path, thresholds: Sequence[float], **kwargs: Any
    ) -> PolicyLevels:
        """A selector whose module is loaded from a module-weights checkpoint."""
        return cls(module_from_weights_file(path), thresholds, **kwargs)

    def set_student(self, student: torch.nn.Module) -> None:
        """The student whose pyramid the observations describe."""
        self.student = student

    def observations(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The per-sample observations [B, obs_dim] of ``batch`` (student only, no teacher)."""
        if self.student is None:
            raise RuntimeError("PolicyLevels needs the student: call set_student(student) first")
        if self._observe is None:
            self._observe = default_observation_fn()
        return self._observe(
            self.student, batch, self.running_gap, progress, self.budget_left, self.thresholds
        )

    @torch.no_grad()
    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The policy's [B, 4] bool level mask for ``batch`` at training progress in [0, 1]."""
        obs = torch.as_tensor(self.observations(batch, progress), dtype=torch.float32)
        device = next(self.module.parameters()).device
        logits = self.module.subset_logits(obs.to(device)).float().cpu()
        if self.greedy:
            actions = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            actions = torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)
        return subset_bits(actions).to(batch.images.device)
