"""Who decides which levels each sample distils: fixed sets, random subsets, the scale rule (and,
in ``policies.policy_selector``, a learnt policy).

A selector is a ``LevelSelector``; what some selectors need beyond that is a small protocol of its
own, which the distillation loop checks with ``isinstance``: ``StudentObservingSelector`` (reads the
student being distilled), ``StatefulSelector`` (has state a resumed run must restore) and
``FingerprintedSelector`` (its choices depend on more than its name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.objective import DistillationState, ObjectiveTerms
from rlpkd.errors import ConfigError
from rlpkd.levels import NUM_LEVELS, format_levels, levels_to_mask, parse_levels
from rlpkd.models.detector import DetectorOutput
from rlpkd.models.fcos_loss import box_pyramid_levels

__all__ = [
    "LevelSelector",
    "StudentObservingSelector",
    "FeatureObservingSelector",
    "OutputObservingSelector",
    "StepObservingSelector",
    "TrainingObservingSelector",
    "DelegatingSelector",
    "StatefulSelector",
    "FingerprintedSelector",
    "FixedLevels",
    "RandomLevels",
    "ScaleRuleLevels",
    "SCALE_RULE",
    "parse_level_spec",
]


class LevelSelector(Protocol):
    """Chooses a [B, 4] bool level mask for a batch (the decision unit is one sample)."""

    name: str

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The mask for ``batch`` at training progress in [0, 1]."""
        ...


@runtime_checkable
class StudentObservingSelector(Protocol):
    """A selector whose choices read the student being distilled (a policy observing its pyramid);
    the distillation loop hands it each fresh student."""

    def set_student(self, student: torch.nn.Module) -> None:
        """The student whose state the next ``select`` calls observe."""
        ...


@runtime_checkable
class FeatureObservingSelector(Protocol):
    """A selector that chooses from the student's pyramid as the training step computes it: the
    distillation loop runs the step's student forward first and hands it the detached features,
    so observing costs no second forward."""

    def select_from_features(
        self, batch: DetectionBatch, features: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        """The [B, 4] mask for ``batch`` given the student's features of it (train mode)."""
        ...


@runtime_checkable
class OutputObservingSelector(Protocol):
    """A selector that chooses from the step's whole student forward (features and head outputs,
    detached), e.g. to rank samples by their detection loss; the loop runs the forward first."""

    def select_from_output(
        self, batch: DetectionBatch, output: DetectorOutput, progress: float
    ) -> torch.Tensor:
        """The [B, 4] mask for ``batch`` given the student's forward of it (train mode)."""
        ...


@runtime_checkable
class StepObservingSelector(Protocol):
    """A selector that learns from every finished step (e.g. a per-image memory of KD gaps)."""

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """The step's batch, the mask it used and its objective terms (per-sample KD losses)."""
        ...


@runtime_checkable
class TrainingObservingSelector(Protocol):
    """A selector that reads the whole training state (e.g. to probe each pair's value signal):
    the distillation loop hands it the student, teacher, objective and optimiser it built."""

    def set_training(self, training: DistillationState) -> None:
        """What the next ``select`` calls may read (they must not change it)."""
        ...


@runtime_checkable
class StatefulSelector(Protocol):
    """A selector with state a resumed run must restore (an RNG, a running statistic); saved in
    the student's resume file."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the same choices."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


@runtime_checkable
class FingerprintedSelector(Protocol):
    """A selector whose choices depend on more than its ``name`` (thresholds, policy weights):
    ``fingerprint`` says what, so a finished run is only reused when it is the same."""

    fingerprint: str


class DelegatingSelector:
    """Base of a selector that wraps another object, ``wrapped`` (a selector or a scorer), and
    hands on to it whichever of the loop's calls it takes: the student, the training state and
    every finished step.

    A subclass names the attribute that holds the wrapped object in ``wrapped_attribute``, and
    its own resume state in ``own_state`` / ``load_own_state``; ``state_dict`` is that state with
    the wrapped object's under the same name (``{}`` when it keeps none)."""

    wrapped_attribute: ClassVar[str]
    """The attribute holding ``wrapped``, and the key of its state in ``state_dict()``."""

    @property
    def wrapped(self) -> Any:
        """The object the calls go on to."""
        return getattr(self, self.wrapped_attribute)

    def set_student(self, student: torch.nn.Module) -> None:
        """Hand ``wrapped`` the student when it observes one (a policy)."""
        if isinstance(self.wrapped, StudentObservingSelector):
            self.wrapped.set_student(student)

    def set_training(self, training: DistillationState) -> None:
        """Hand ``wrapped`` the training state when it probes it (value-greedy)."""
        if isinstance(self.wrapped, TrainingObservingSelector):
            self.wrapped.set_training(training)

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """Pass a finished step to ``wrapped`` when it learns from steps (a running gap)."""
        if isinstance(self.wrapped, StepObservingSelector):
            self.wrapped.observe_step(batch, mask, terms)

    def own_state(self) -> dict[str, Any]:
        """This selector's own resume state, without ``wrapped``'s."""
        return {}

    def load_own_state(self, state: dict[str, Any]) -> None:
        """Restore ``own_state()`` from ``state`` (``state_dict()``'s)."""

    def state_dict(self) -> dict[str, Any]:
        """``own_state()`` and, under ``wrapped_attribute``, ``wrapped``'s state."""
        wrapped = self.wrapped.state_dict() if isinstance(self.wrapped, StatefulSelector) else {}
        return {**self.own_state(), self.wrapped_attribute: wrapped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.load_own_state(state)
        if isinstance(self.wrapped, StatefulSelector):
            self.wrapped.load_state_dict(state[self.wrapped_attribute])


class FixedLevels:
    """The same level set for every sample."""

    def __init__(self, levels: tuple[str, ...]) -> None:
        self.levels = levels
        self.name = format_levels(levels)
        self._mask = levels_to_mask(levels)

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The fixed mask repeated over the batch."""
        return self._mask.expand(len(batch), NUM_LEVELS).clone()


class RandomLevels:
    """Independent per-sample, per-level coin flips with inclusion probability ``probability``.

    ``probability`` is chosen (``FlopsModel.inclusion_prob_for_fraction``) so that the expected KD
    FLOPs are a given fraction of all-level KD: the matched-FLOPs random baseline.
    """

    def __init__(self, probability: float, fraction: float, seed: int) -> None:
        self.probability = probability
        self.name = f"random:{fraction:g}"
        self._generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The RNG state (for resuming a run)."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the RNG state."""
        self._generator.set_state(state["generator"])

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """Fresh random subsets for every sample."""
        draws = torch.rand(len(batch), NUM_LEVELS, generator=self._generator)
        return draws < self.probability


class ScaleRuleLevels:
    """The scale rule (DESIGN §7): each sample distils exactly the levels its ground-truth boxes
    are assigned to by the FCOS range rule (``box_pyramid_levels``) — a non-learnt per-sample
    heuristic a learnt policy must beat to matter. A sample without boxes distils nothing."""

    name = "scale-rule"

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.fingerprint = f"scale-rule:{self.thresholds}"

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """[B, 4]: True at the levels some valid box of the sample is assigned to."""
        levels = box_pyramid_levels(batch.boxes.float(), self.thresholds)  # [B, M]
        one_hot = torch.nn.functional.one_hot(levels, NUM_LEVELS).bool()
        return (one_hot & (batch.labels >= 0)[..., None]).any(dim=1).cpu()


SCALE_RULE = ScaleRuleLevels.name


def parse_level_spec(spec: str) -> tuple[str, tuple[str, ...] | float | None]:
    """'none' / 'all' / 'P2,P4' -> ('fixed', levels); 'random:0.5' -> ('random', 0.5);
    'scale-rule' -> ('scale-rule', None)."""
    text = spec.strip()
    if text.lower() == SCALE_RULE:
        return SCALE_RULE, None
    if text.lower().startswith("random:"):
        try:
            fraction = float(text.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"level spec {spec!r}: random:FRACTION needs a fraction in [0, 1]")
        return "random", fraction
    try:
        return "fixed", parse_levels(text)
    except ConfigError as error:
        raise ConfigError(f"{error}; or a per-sample spec: {SCALE_RULE}, random:FRACTION") from None
