"""Phase 3: the frozen learnt policy as a LevelSelector for policy-guided distillation.

For each sample the selector builds the same observation the env builds (``envs.observation``:
student pyramid statistics, the object-scale histogram, running KD gaps, progress, the class
histogram), which needs only the student and the annotations, never the teacher; the frozen module
then picks a level subset per sample (argmax, or a draw from its categorical). The class
histogram's length K is the one the policy was trained with: ``num_classes_of_observation_dim`` of
the module's input size.

In training the distillation loop runs the step's own student forward first and asks
``select_from_features`` (the features as the KD step computes them, training-mode BatchNorm, the
same the env observes), so choosing costs no second student forward. The loop also hands the
selector the student it distils (``set_student``, for standalone ``select``) and, after every
update, the step (``observe_step``: the raw per-sample KD losses at the distilled entries update
the running gap), so the running-gap features evolve as they did in the env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from envs.observation import (
    eval_pyramid,
    new_running_gap,
    num_classes_of_observation_dim,
    observations_from_features,
)
from policies.level_policy_module import LevelSelectionModule
from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.normalise import RunningLevelScale
from rlpkd.distill.objective import ObjectiveTerms
from rlpkd.levels import subsets_to_masks
from rlpkd.models.detector import DetectorOutput

__all__ = ["ObservationFn", "PolicyLevels", "PolicyScores", "default_observation_fn"]

ObservationFn = Callable[
    [Any, DetectionBatch, torch.Tensor, float, Sequence[float]], "np.ndarray | torch.Tensor"
]
"""(student, batch, running_gap [4], progress, thresholds) -> observations [B, D]."""


def default_observation_fn(num_classes: int) -> ObservationFn:
    """The env's own observations (``envs.observation.observations_from_features``) of a
    separate no-grad eval-mode student forward (``eval_pyramid``), for a dataset of
    ``num_classes`` classes."""

    def observe(
        student: Any,
        batch: DetectionBatch,
        running_gap: torch.Tensor,
        progress: float,
        thresholds: Sequence[float],
    ) -> np.ndarray:
        features = eval_pyramid(student, batch.images)
        return observations_from_features(
            features, batch, running_gap, progress, thresholds, num_classes
        )

    return observe


class PolicyLevels:
    """A LevelSelector driven by a frozen policy; it observes the student
    (``StudentObservingSelector``), keeps state (``StatefulSelector``) and has a fingerprint
    (``FingerprintedSelector``), the protocols of ``rlpkd.training.level_selection``.

    Args:
        module: The trained LevelSelectionModule (put in eval mode, gradients off).
        thresholds: ``data.level_thresholds`` (the scale histogram of the observation).
        student: The student being distilled, or None until ``set_student``.
        greedy: Argmax subset per sample; False draws from the policy's categorical.
        seed: Seed of the draws when ``greedy`` is False.
        running_gap: The running per-level KD gap shown in the observation (the env's
            ``envs.observation.new_running_gap()`` by default); keep it current with
            ``update_running_gap`` after every student step, as the env does.
        observe: Observation builder; defaults to ``default_observation_fn``'s.
        name: Method name in reports.
        fingerprint: What identifies the policy's choices beyond its name (e.g. a hash of its
            weights file), so a finished run is reused only for the same policy; defaults to
            the name.
    """

    def __init__(
        self,
        module: LevelSelectionModule,
        thresholds: Sequence[float],
        student: torch.nn.Module | None = None,
        greedy: bool = True,
        seed: int = 0,
        running_gap: RunningLevelScale | None = None,
        observe: ObservationFn | None = None,
        name: str = "policy",
        fingerprint: str | None = None,
    ) -> None:
        self.module = module.eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.student = student
        self.greedy = greedy
        self.running_gap = new_running_gap() if running_gap is None else running_gap
        self.name = name if greedy else f"{name}:sampled"
        self.fingerprint = self.name if fingerprint is None else fingerprint
        self._observe = observe
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def num_classes(self) -> int:
        """K of the class histogram the module was trained with (from its input size).

        Raises:
            ValueError: the module's input is shorter than any level-selection observation.
        """
        obs_dim = int(np.prod(self.module.observation_space.shape))
        return num_classes_of_observation_dim(obs_dim)

    def set_student(self, student: torch.nn.Module) -> None:
        """The student whose pyramid the observations describe."""
        self.student = student

    def update_running_gap(self, kd_raw: torch.Tensor, masks: torch.Tensor) -> None:
        """Fold a step's raw per-sample KD losses [B, 4] at the distilled entries into the gap."""
        self.running_gap.update(kd_raw, masks)

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """A finished step of the distillation loop (``StepObservingSelector``): its KD losses
        keep the running gap current."""
        self.update_running_gap(terms.kd_raw, mask)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed Phase-3 run needs: the running gap and the draw RNG."""
        return {
            "running_gap": self.running_gap.state_dict(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (a state saved with the removed ``budget_left`` loads too)."""
        self.running_gap.load_state_dict(state["running_gap"])
        self._generator.set_state(state["generator"])

    def observations(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The per-sample observations [B, obs_dim] of ``batch`` (student only, no teacher)."""
        if self.student is None:
            raise RuntimeError("PolicyLevels needs the student: call set_student(student) first")
        if self._observe is None:
            self._observe = default_observation_fn(self.num_classes)
        rows = self._observe(self.student, batch, self.running_gap.scale, progress, self.thresholds)
        return torch.as_tensor(rows, dtype=torch.float32)

    @torch.no_grad()
    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The policy's [B, 4] bool level mask for ``batch`` at training progress in [0, 1], from
        a separate no-grad forward of the student (``observe``; eval mode by default). Training
        uses ``select_from_features`` on the step's own forward instead."""
        return self._choose(self.observations(batch, progress), batch)

    @torch.no_grad()
    def select_from_features(
        self, batch: DetectionBatch, features: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        """The mask from the student's pyramid ``features`` of ``batch`` as the KD step computed
        them (training mode, detached): the observation the env shows, at no extra forward."""
        return self._choose(self.observations_from_features(batch, features, progress), batch)

    def observations_from_features(
        self, batch: DetectionBatch, features: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        """The observations [B, obs_dim] ``select_from_features`` acts on: exactly the env's
        (``envs.observation.observations_from_features`` with this selector's running gap)."""
        rows = observations_from_features(
            features, batch, self.running_gap.scale, progress, self.thresholds, self.num_classes
        )
        return torch.as_tensor(rows, dtype=torch.float32)

    def _choose(self, obs: torch.Tensor, batch: DetectionBatch) -> torch.Tensor:
        device = next(self.module.parameters()).device
        logits = self.module.subset_logits(obs.to(device)).float().cpu()
        if self.greedy:
            actions = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            actions = torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)
        return subsets_to_masks(actions).to(batch.images.device)


class PolicyScores:
    """The frozen policy as a ``SubsetScorer`` (``rlpkd.training.budget_selection``): each
    subset's log-probability under the policy, so that ``BudgetedLevels`` spends a budget on the
    choices the policy rates highest. It observes the step's own forward and keeps the running
    gap current from every finished step, as ``PolicyLevels`` does."""

    def __init__(self, policy: PolicyLevels) -> None:
        self.policy = policy

    @torch.no_grad()
    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """[B, 16] log-probabilities of the subsets for each sample."""
        if output is None:
            obs = self.policy.observations(batch, progress)
        else:
            obs = self.policy.observations_from_features(batch, output.features, progress)
        device = next(self.policy.module.parameters()).device
        logits = self.policy.module.subset_logits(obs.to(device)).double().cpu()
        return torch.log_softmax(logits, dim=-1)

    def set_student(self, student: torch.nn.Module) -> None:
        """The student whose pyramid the observations describe."""
        self.policy.set_student(student)

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """Fold the step's KD losses into the policy's running gap."""
        self.policy.observe_step(batch, mask, terms)

    def state_dict(self) -> dict[str, Any]:
        """The policy's state (running gap, RNG)."""
        return self.policy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.policy.load_state_dict(state)
