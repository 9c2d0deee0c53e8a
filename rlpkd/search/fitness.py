"""The fitness of a static level subset: a short distillation run scored on the held-out part.

Fitness-based searches (regularized evolution, random search, the exhaustive oracle) only see a
``SubsetFitness`` callable, so their algorithms are testable with a cheap stand-in. The real one,
``ShortRunFitness``, trains a fresh student with KD at the subset for ``search.fitness_epochs`` on
the search-train part and scores AP on the held-out part (DESIGN §7):
``score = AP - lam * kd_flops(S) / kd_flops(all)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlpkd.config import Config
from rlpkd.errors import DivergenceError
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.levels import format_levels, parse_levels, subset_to_index
from rlpkd.search.context import SearchContext
from rlpkd.search.result import SearchCost, SearchResult
from rlpkd.training.distill_run import distill_student
from rlpkd.training.kd_step import first_non_finite
from rlpkd.training.level_selection import FixedLevels

__all__ = [
    "FitnessRecord",
    "SubsetFitness",
    "CachedFitness",
    "ShortRunFitness",
    "short_run_config",
    "fitness_phase",
    "checked_record",
    "evaluate_all",
    "ranking_key",
    "best_record",
    "total_cost",
    "record_trace",
    "fitness_search_result",
]


@dataclass(frozen=True)
class FitnessRecord:
    """One subset's fitness.

    Attributes:
        levels: the subset, in LEVELS order.
        score: the search objective, AP - lam * kd_fraction (higher is better).
        ap: COCO AP on the held-out part, in [0, 1].
        kd_fraction: kd_flops(levels) / kd_flops(all levels), in [0, 1].
        cost: the compute this call spent (zero when ``cached``).
        cached: a repeat of an already evaluated subset; nothing was retrained.
    """

    levels: tuple[str, ...]
    score: float
    ap: float
    kd_fraction: float
    cost: SearchCost = field(default_factory=SearchCost)
    cached: bool = False

    @property
    def name(self) -> str:
        """The subset as 'none' / 'all' / 'P2,P4'."""
        return format_levels(self.levels)


def fitness_phase(levels: Sequence[str]) -> str:
    """How a fitness evaluation is named in a DivergenceError: 'search fitness of P2,P3'."""
    return f"search fitness of {format_levels(tuple(levels))}"


def checked_record(record: FitnessRecord, evaluation: int) -> FitnessRecord:
    """``record`` itself, or a DivergenceError when its AP, kd_fraction or score is not finite
    (a search must never rank a NaN). ``evaluation``: its 1-based evaluation number."""
    found = first_non_finite(
        [("AP", record.ap), ("kd_fraction", record.kd_fraction), ("score", record.score)]
    )
    if found is not None:
        raise DivergenceError(fitness_phase(record.levels), evaluation, *found)
    return record


class SubsetFitness(Protocol):
    """Scores a static level subset (higher is better)."""

    def __call__(self, levels: tuple[str, ...]) -> FitnessRecord:
        """The fitness of ``levels``."""
        ...


class CachedFitness:
    """Memoises a fitness by subset: a repeat returns the first record, marked ``cached``, at
    zero cost. Sound because fitness runs are deterministic for a fixed seed (on CPU).

    Args:
        evaluate: the uncached fitness (called at most once per distinct subset).
        device: the device type written into a cached record's zero cost.
    """

    def __init__(
        self, evaluate: Callable[[tuple[str, ...]], FitnessRecord], device: str = "cpu"
    ) -> None:
        self._evaluate = evaluate
        self._device = device
        self._records: dict[tuple[str, ...], FitnessRecord] = {}

    @property
    def evaluated(self) -> dict[tuple[str, ...], FitnessRecord]:
        """The first record of every subset evaluated so far, in evaluation order."""
        return dict(self._records)

    def __call__(self, levels: Sequence[str]) -> FitnessRecord:
        subset = parse_levels(list(levels))
        if subset in self._records:
            return dataclasses.replace(
                self._records[subset], cost=SearchCost(device=self._device), cached=True
            )
        record = checked_record(self._evaluate(subset), len(self._records) + 1)
        self._records[subset] = record
        return record


def short_run_config(config: Config, num_train: int) -> Config:
    """``config`` with the student schedule cut to ``search.fitness_epochs`` epochs.

    The warm-up is capped at a quarter of the short run's steps so a short run is not all warm-up.
    """
    schedule = config.student_schedule
    epochs = config.search.fitness_epochs
    steps = epochs * (num_train // schedule.batch_size)  # the loader drops the last partial batch
    short = dataclasses.replace(
        schedule, epochs=epochs, warmup_steps=min(schedule.warmup_steps, steps // 4)
    )
    return dataclasses.replace(config, student_schedule=short)


class ShortRunFitness(CachedFitness):
    """Fitness by a short distillation run (the evaluation of Real et al., AAAI 2019, made cheap).

    Trains a fresh student with ``FixedLevels(levels)`` on ``context.datasets.train`` for
    ``search.fitness_epochs`` epochs, seeded by ``context.seed`` (every subset sees the same
    initialisation and data order), and scores AP on ``context.datasets.val`` (the held-out part
    of the training split). Cached by subset.
    """

    def __init__(self, context: SearchContext) -> None:
        super().__init__(self._train_and_score, context.device.type)
        self.context = context
        self.config = short_run_config(context.config, len(context.datasets.train))
        self._subset_kd_flops = context.flops.subset_kd_flops()

    def _train_and_score(self, levels: tuple[str, ...]) -> FitnessRecord:
        context = self.context
        start = time.perf_counter()
        student, _, stats = distill_student(
            self.config,
            context.datasets,
            context.teacher,
            FixedLevels(levels),
            context.seed,
            context.device,
            self._subset_kd_flops,
            progress=context.progress,
            phase=f"{fitness_phase(levels)} (short run, seed {context.seed})",
        )
        metrics, _ = evaluate_detector(
            student,
            context.datasets.val,
            self.config.eval,
            context.device,
            self.config.runtime.amp,
            progress=context.progress,
        )
        # NaN only when the held-out part has no ground truth at all: nothing found, AP 0.
        ap = 0.0 if math.isnan(metrics["AP"]) else float(metrics["AP"])
        cost = SearchCost(
            wall_time_s=time.perf_counter() - start,
            device=context.device.type,
            kd_gflops=stats.kd_flops / 1e9,
            student_images=stats.images,
            evaluations=1,
        )
        return FitnessRecord(
            levels=levels,
            score=context.score(ap, levels),
            ap=ap,
            kd_fraction=context.kd_fraction(levels),
            cost=cost,
        )


def evaluate_all(fitness: SubsetFitness, subsets: Iterable[tuple[str, ...]]) -> list[FitnessRecord]:
    """The fitness of each subset, in order; a non-finite one raises DivergenceError."""
    return [checked_record(fitness(subset), i + 1) for i, subset in enumerate(subsets)]


def ranking_key(record: FitnessRecord) -> tuple[float, float, int]:
    """Sort key, best first: higher score, then fewer kd FLOPs, then lower subset index."""
    return (-record.score, record.kd_fraction, subset_to_index(record.levels))


def best_record(records: Iterable[FitnessRecord]) -> FitnessRecord:
    """The best record under ``ranking_key`` (deterministic on ties).

    Raises:
        DivergenceError: a record's fitness is not finite (NaN would make the pick arbitrary).
    """
    records = [checked_record(record, i + 1) for i, record in enumerate(records)]
    if not records:
        raise ValueError("no fitness records to choose from")
    return min(records, key=ranking_key)


def total_cost(records: Iterable[FitnessRecord], device: str) -> SearchCost:
    """The summed cost of the records (cached repeats add nothing)."""
    cost = SearchCost(device=device)
    for record in records:
        cost.add(record.cost)
    return cost


def record_trace(step: int, record: FitnessRecord) -> dict[str, Any]:
    """One trace entry for an evaluation."""
    return {
        "step": step,
        "levels": record.name,
        "score": record.score,
        "ap": record.ap,
        "kd_fraction": record.kd_fraction,
        "cached": record.cached,
    }


def fitness_search_result(
    method: str,
    records: Sequence[FitnessRecord],
    device: str,
    trace: list[dict[str, Any]] | None = None,
) -> SearchResult:
    """The SearchResult of a fitness search: the best record's subset, the summed cost, every
    evaluated subset's score, and ``trace`` (default: one ``record_trace`` per record)."""
    return SearchResult(
        method=method,
        levels=best_record(records).levels,
        cost=total_cost(records, device),
        trace=trace if trace is not None else [record_trace(i, r) for i, r in enumerate(records)],
        scores={record.name: record.score for record in records},
    )
