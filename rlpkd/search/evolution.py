"""Regularized (aging) evolution over level subsets (Real et al., AAAI 2019, "Regularized
Evolution for Image Classifier Architecture Search").

The population is a FIFO queue. Each cycle samples ``sample_size`` members uniformly without
replacement (a tournament), mutates the best of them by flipping one random level, evaluates the
child, appends it and removes the *oldest* member (aging), not the worst: a subset survives only
by being rediscovered, which keeps a noisy short-run fitness from freezing the population.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from rlpkd.levels import LEVELS, NUM_LEVELS, NUM_SUBSETS, format_levels, index_to_subset
from rlpkd.search.context import SearchContext
from rlpkd.search.fitness import (
    FitnessRecord,
    ShortRunFitness,
    SubsetFitness,
    best_record,
    checked_record,
    fitness_search_result,
    ranking_key,
    record_trace,
)
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = [
    "Individual",
    "EvolutionStep",
    "EvolutionOutcome",
    "mutate",
    "regularized_evolution",
    "evolution_search",
]


@dataclass(frozen=True)
class Individual:
    """A population member: its fitness and the step it was born at (its age)."""

    record: FitnessRecord
    born: int

    @property
    def levels(self) -> tuple[str, ...]:
        """The member's subset."""
        return self.record.levels


@dataclass(frozen=True)
class EvolutionStep:
    """One evaluation: the child (or an initial random member), its parent, who aged out.

    Attributes:
        individual: the member added at this step (``born`` = the step index).
        parent: the tournament winner it was mutated from (None while initialising).
        removed: the oldest member removed at this step (None while initialising).
        population: the population after the step, oldest first.
    """

    individual: Individual
    parent: Individual | None
    removed: Individual | None
    population: tuple[Individual, ...]


@dataclass(frozen=True)
class EvolutionOutcome:
    """Everything a run of regularized evolution did, in order."""

    steps: tuple[EvolutionStep, ...]

    @property
    def history(self) -> list[FitnessRecord]:
        """Every evaluated individual's record, in evaluation order."""
        return [step.individual.record for step in self.steps]

    @property
    def population(self) -> tuple[Individual, ...]:
        """The final population, oldest first."""
        return self.steps[-1].population

    @property
    def best(self) -> FitnessRecord:
        """The best individual ever evaluated (not just the final population's best)."""
        return best_record(self.history)


def mutate(levels: tuple[str, ...], generator: random.Random) -> tuple[str, ...]:
    """``levels`` with one uniformly chosen level switched on or off (always a new subset)."""
    flipped = LEVELS[generator.randrange(NUM_LEVELS)]
    chosen = set(levels) ^ {flipped}
    return tuple(level for level in LEVELS if level in chosen)


def regularized_evolution(
    fitness: SubsetFitness,
    population_size: int,
    sample_size: int,
    cycles: int,
    generator: random.Random,
) -> EvolutionOutcome:
    """Run aging evolution (Real et al. 2019, Algorithm 1) over the 16 level subsets.

    Args:
        fitness: scores a subset (higher is better).
        population_size: P, members kept; the first P evaluations are uniform random subsets.
        sample_size: S <= P, tournament size.
        cycles: C, children evaluated after initialisation (P + C fitness calls in all).
        generator: all randomness (initial subsets, tournaments, mutations).

    Raises:
        DivergenceError: an evaluation's fitness is not finite (before it joins a tournament).
    """
    if population_size < 1 or not 1 <= sample_size <= population_size or cycles < 0:
        raise ValueError(
            f"evolution needs population >= 1, 1 <= sample_size <= population and cycles >= 0; "
            f"got population={population_size}, sample_size={sample_size}, cycles={cycles}"
        )
    population: deque[Individual] = deque()
    steps: list[EvolutionStep] = []
    for step in range(population_size):
        subset = index_to_subset(generator.randrange(NUM_SUBSETS))
        individual = Individual(checked_record(fitness(subset), step + 1), step)
        population.append(individual)
        steps.append(EvolutionStep(individual, None, None, tuple(population)))
    for step in range(population_size, population_size + cycles):
        tournament = generator.sample(list(population), sample_size)
        parent = min(tournament, key=lambda member: ranking_key(member.record))
        child = Individual(
            checked_record(fitness(mutate(parent.levels, generator)), step + 1), step
        )
        population.append(child)
        removed = population.popleft()
        steps.append(EvolutionStep(child, parent, removed, tuple(population)))
    return EvolutionOutcome(tuple(steps))


@SEARCH_METHODS.register("evolution")
def evolution_search(context: SearchContext) -> SearchResult:
    """Regularized evolution with short-run fitness (``search.population``, ``sample_size``,
    ``cycles``), seeded by ``context.seed``."""
    settings = context.config.search
    outcome = regularized_evolution(
        ShortRunFitness(context),
        settings.population,
        settings.sample_size,
        settings.cycles,
        random.Random(context.seed),
    )
    trace: list[dict[str, Any]] = []
    for index, step in enumerate(outcome.steps):
        entry = record_trace(index, step.individual.record)
        entry["parent"] = None if step.parent is None else format_levels(step.parent.levels)
        entry["removed"] = None if step.removed is None else format_levels(step.removed.levels)
        entry["population"] = [format_levels(member.levels) for member in step.population]
        trace.append(entry)
    return fitness_search_result("evolution", outcome.history, context.device.type, trace)
