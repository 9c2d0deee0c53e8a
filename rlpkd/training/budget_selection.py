"""Selectors that spend a KD budget exactly, and the cheap rules a learnt policy must beat at it.

``BudgetedLevels`` turns any ``SubsetScorer`` (per-(sample, subset) scores for a batch) into a
level selector that meets a budget: each batch's choices come from ``allocate_subsets`` under the
allowance of a ``BudgetAccount``. The scorers here are the controls of a budget study (issue 19):

- ``RandomSampleScores``: all levels on a random share of the samples;
- ``RandomSubsetScores``: independent per-level coin flips (the usual random baseline), nudged to
  the nearest cheaper or dearer subset where the batch's allowance asks;
- ``GapRankedScores``: the samples whose teacher–student feature gap was largest when last
  distilled (a memory per image: no extra teacher run; an image not yet measured comes first);
- ``LossRankedScores``: the samples of highest student detection loss, from the step's own forward;
- ``StaticPairScores``: two static subsets mixed so that the mean cost is the budget;
- ``ValueGreedyScores``: each subset's value signal ``Σ_{l∈a} v_il`` measured at every step
  (``rlpkd.distill.level_value``), so the allocation ranks pairs by value per FLOP: an upper
  bound that costs a held-out gradient and a JVP per step, too dear to use in practice.

``TemporalLevels`` (all levels in the first or the last part of the schedule) meets its budget
over the schedule by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.level_value import level_values
from rlpkd.distill.normalise import RunningLevelScale
from rlpkd.distill.objective import DistillationState, ObjectiveTerms
from rlpkd.levels import LEVELS, NUM_LEVELS, NUM_SUBSETS, subset_to_index, subsets_to_masks
from rlpkd.models.detector import DetectorOutput
from rlpkd.models.fcos_loss import fcos_losses
from rlpkd.training.budget_allocation import BudgetAccount, allocate_subsets
from rlpkd.training.level_selection import DelegatingSelector

__all__ = [
    "SubsetScorer",
    "BudgetedLevels",
    "RandomSampleScores",
    "RandomSubsetScores",
    "GapRankedScores",
    "LossRankedScores",
    "StaticPairScores",
    "ValueGreedyScores",
    "TemporalLevels",
    "all_or_nothing_scores",
    "pace_suffix",
    "static_pair_scores",
    "SUBSET_MASKS",
]

ALL_INDEX = subset_to_index(LEVELS)
SUBSET_MASKS = subsets_to_masks(torch.arange(NUM_SUBSETS)).double()
"""[16, 4] the levels of each subset (1.0 where it distils the level)."""


@runtime_checkable
class SubsetScorer(Protocol):
    """Scores every level subset of every sample of a batch; higher is worth more."""

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """[B, 16] scores (``-inf``: not an option); ``output`` is the step's own student
        forward (detached), None where the caller has none."""
        ...


def static_pair_scores(count: int, low: int, high: int) -> torch.Tensor:
    """[count, 16] scores of a mix of two static subsets: ``high`` 1, ``low`` 0, no KD −1, every
    other subset ruled out, so the allowance decides how many samples take ``high``."""
    scores = torch.full((count, NUM_SUBSETS), float("-inf"), dtype=torch.float64)
    scores[:, 0] = -1.0
    scores[:, low] = 0.0
    scores[:, high] = 1.0
    return scores


def pace_suffix(pace: Sequence[float]) -> str:
    """What a budget ``pace`` adds to a selector's fingerprint: its shares of the run's budget
    (``''`` for an even spread, so students from before paces keep their fingerprints)."""
    if not pace:
        return ""
    total = float(sum(pace))
    return ":pace=" + ",".join(f"{float(w) / total:.4f}" for w in pace)


def all_or_nothing_scores(priority: torch.Tensor) -> torch.Tensor:
    """[B, 16] scores with two options per sample: no KD (0) or all levels (``priority``)."""
    scores = torch.full((len(priority), NUM_SUBSETS), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0
    scores[:, ALL_INDEX] = priority.double().cpu()
    return scores


class BudgetedLevels(DelegatingSelector):
    """A level selector that spends ``budget`` (a fraction of all-level kd FLOPs per image) with
    the choices ``scorer`` values most, batch by batch (``allocate_subsets``, ``BudgetAccount``).

    It reads the step's own student forward (``OutputObservingSelector``), hands the scorer the
    student, the training state and every finished step where it takes them
    (``DelegatingSelector``) and keeps the account and the scorer's state across a resume. With
    a ``pace`` (``rl.budget_pace``) the account spreads the run's budget over the schedule by
    those weights, and the fingerprint says so.
    """

    wrapped_attribute = "scorer"

    def __init__(
        self,
        scorer: SubsetScorer,
        subset_costs: torch.Tensor,
        budget: float,
        name: str,
        fingerprint: str | None = None,
        pace: Sequence[float] = (),
    ) -> None:
        self.scorer = scorer
        self.subset_costs = subset_costs.double().cpu()
        self.account = BudgetAccount(budget, pace)
        self.name = name
        self.fingerprint = (fingerprint or f"{name}:budget={budget:.6f}") + pace_suffix(pace)

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """The mask for ``batch`` without the step's forward (scorers that need it fail)."""
        return self._allocate(batch, self.scorer.scores(batch, None, progress), progress)

    def select_from_output(
        self, batch: DetectionBatch, output: DetectorOutput, progress: float
    ) -> torch.Tensor:
        """The mask for ``batch`` from the step's own student forward ``output`` (detached)."""
        return self._allocate(batch, self.scorer.scores(batch, output, progress), progress)

    def _allocate(
        self, batch: DetectionBatch, scores: torch.Tensor, progress: float
    ) -> torch.Tensor:
        allowance = self.account.allowance(len(batch), progress)
        chosen = allocate_subsets(scores, self.subset_costs, allowance).cpu()
        self.account.charge(len(batch), float(self.subset_costs[chosen].sum()), progress)
        return subsets_to_masks(chosen).to(batch.images.device)

    def own_state(self) -> dict[str, Any]:
        """The account (``DelegatingSelector`` adds the scorer's state)."""
        return {"account": self.account.state_dict()}

    def load_own_state(self, state: dict[str, Any]) -> None:
        """Restore the account."""
        self.account.load_state_dict(state["account"])


class _SeededScorer:
    """A scorer with its own seeded RNG, saved across a resume."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        """The RNG state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.generator.set_state(state["generator"])


class RandomSampleScores(_SeededScorer):
    """All levels or none per sample, the samples drawn at random."""

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """A random priority per sample for all levels."""
        return all_or_nothing_scores(torch.rand(len(batch), generator=self.generator) + 1.0)


class RandomSubsetScores(_SeededScorer):
    """Independent per-level coin flips of inclusion probability ``probability`` (chosen so that
    their expected cost is the budget); a subset scores minus its distance from the draw, so the
    allocation keeps the draw unless the allowance asks for a cheaper or dearer one."""

    def __init__(self, probability: float, seed: int) -> None:
        super().__init__(seed)
        self.probability = float(probability)

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """Minus the Hamming distance of each subset from the sample's draw, with a random
        tie-break."""
        draws = torch.rand(len(batch), NUM_LEVELS, generator=self.generator) < self.probability
        distance = (draws.double()[:, None, :] - SUBSET_MASKS[None]).abs().sum(dim=2)
        noise = torch.rand(len(batch), NUM_SUBSETS, generator=self.generator, dtype=torch.float64)
        return -distance + 0.01 * noise


class GapRankedScores(_SeededScorer):
    """The teacher–student feature gap of each image as last measured when it was distilled: its
    per-level KD losses over each level's running mean (``RunningLevelScale``), averaged over the
    levels it distilled. Images not yet measured come first, in random order."""

    UNMEASURED = 1.0e6

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.gaps: dict[int, float] = {}
        self.level_scale = RunningLevelScale()

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """All levels' priority: the remembered gap, or first place when there is none."""
        ids = batch.image_ids.cpu().tolist()
        tie = torch.rand(len(ids), generator=self.generator, dtype=torch.float64)
        known = torch.tensor([self.gaps.get(int(i), self.UNMEASURED) for i in ids])
        return all_or_nothing_scores(known.double() + 1e-6 * tie)

    def observe_step(
        self, batch: DetectionBatch, mask: torch.Tensor, terms: ObjectiveTerms
    ) -> None:
        """Remember the gap of every sample the step distilled."""
        kd = terms.kd_raw.detach().float().cpu()
        active = mask.cpu().bool()
        self.level_scale.update(kd, active)
        relative = kd / self.level_scale.scale.clamp(min=1e-12)
        counts = active.sum(dim=1)
        means = (relative * active).sum(dim=1) / counts.clamp(min=1)
        for image, count, gap in zip(batch.image_ids.cpu().tolist(), counts, means, strict=True):
            if int(count) > 0:
                self.gaps[int(image)] = float(gap)

    def state_dict(self) -> dict[str, Any]:
        """The gaps, the level scale and the RNG."""
        return super().state_dict() | {
            "gaps": dict(self.gaps),
            "level_scale": self.level_scale.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        super().load_state_dict(state)
        self.gaps = {int(k): float(v) for k, v in state["gaps"].items()}
        self.level_scale.load_state_dict(state["level_scale"])


class LossRankedScores:
    """The student's per-sample FCOS detection loss on the step's own forward."""

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """All levels' priority: the sample's detection loss."""
        if output is None:
            raise ValueError("loss-ranked selection needs the step's own student forward")
        with torch.no_grad():
            losses = fcos_losses(output.head, batch.boxes, batch.labels, self.thresholds)
        return all_or_nothing_scores(losses["per_sample"].detach().float())


class StaticPairScores:
    """Two static subsets, ``low`` at or below the budget and ``high`` above it: as many samples
    take ``high`` as the allowance pays for, the rest ``low``."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = int(low), int(high)

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """``static_pair_scores`` for the batch."""
        return static_pair_scores(len(batch), self.low, self.high)


class ValueGreedyScores:
    """Each subset's value ``Σ_{l∈a} v_il`` for the student as it is at this step, measured
    against the fixed batch ``heldout`` (``rlpkd.distill.level_value.level_values``: the value
    reward's own signal). Needs the training state (``TrainingObservingSelector``)."""

    def __init__(self, heldout: DetectionBatch) -> None:
        self.heldout = heldout
        self._training: DistillationState | None = None

    def set_training(self, training: DistillationState) -> None:
        """The state the value signal probes (read only)."""
        self._training = training

    def scores(
        self, batch: DetectionBatch, output: DetectorOutput | None, progress: float
    ) -> torch.Tensor:
        """[B, 16] the summed value of each subset's levels."""
        if self._training is None:
            raise RuntimeError("value-greedy selection needs set_training first")
        heldout = self.heldout.to(batch.images.device)
        values = level_values(self._training, batch, heldout)
        return values.values.detach().double().cpu() @ SUBSET_MASKS.T


class TemporalLevels:
    """All levels on the first (``early``) or the last ``fraction`` of the schedule's
    ``total_images`` training samples, none elsewhere: a budget of ``fraction`` spent by training
    stage alone, exact to one sample (the window's edge may fall inside a batch)."""

    def __init__(self, fraction: float, early: bool, total_images: int) -> None:
        self.fraction = float(fraction)
        self.early = early
        self.total_images = int(total_images)
        self.window = round(self.fraction * self.total_images)
        self.seen = 0
        self.name = f"{'early' if early else 'late'}@{fraction:.2f}"
        self.fingerprint = f"temporal:{self.name}:{fraction:.6f}:{self.total_images}"

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """Every level for the batch's samples inside the window, no level outside it."""
        index = self.seen + torch.arange(len(batch))
        self.seen += len(batch)
        if self.early:
            inside = index < self.window
        else:
            inside = index >= self.total_images - self.window
        return inside[:, None].expand(len(batch), NUM_LEVELS).clone()

    def state_dict(self) -> dict[str, Any]:
        """The samples seen so far."""
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.seen = int(state["seen"])
