"""Random search over level subsets (Li & Talwalkar, UAI 2019, "Random Search and
Reproducibility for Neural Architecture Search"): draw subsets uniformly, keep the best."""

from __future__ import annotations

import random

from rlpkd.levels import NUM_SUBSETS, index_to_subset
from rlpkd.search.context import SearchContext
from rlpkd.search.fitness import (
    FitnessRecord,
    ShortRunFitness,
    SubsetFitness,
    checked_record,
    fitness_search_result,
)
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = ["random_subset_search", "random_search"]


def random_subset_search(
    fitness: SubsetFitness, samples: int, generator: random.Random
) -> list[FitnessRecord]:
    """The records of ``samples`` subsets drawn uniformly with replacement from the 16, in order
    (a caching fitness does not retrain a repeat). Pick with ``best_record``; a non-finite
    fitness raises DivergenceError."""
    if samples < 1:
        raise ValueError(f"random search needs samples >= 1, got {samples}")
    return [
        checked_record(fitness(index_to_subset(generator.randrange(NUM_SUBSETS))), i + 1)
        for i in range(samples)
    ]


@SEARCH_METHODS.register("random")
def random_search(context: SearchContext) -> SearchResult:
    """Random search with short-run fitness over ``search.random_samples`` draws, seeded by
    ``context.seed``."""
    records = random_subset_search(
        ShortRunFitness(context), context.config.search.random_samples, random.Random(context.seed)
    )
    return fitness_search_result("random", records, context.device.type)
