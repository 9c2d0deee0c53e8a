"""The exhaustive oracle of a static choice: the short-run fitness of all 16 level subsets."""

from __future__ import annotations

from rlpkd.levels import all_subsets
from rlpkd.search.context import SearchContext
from rlpkd.search.fitness import (
    FitnessRecord,
    ShortRunFitness,
    SubsetFitness,
    evaluate_all,
    fitness_search_result,
)
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = ["exhaustive_subset_search", "exhaustive_search"]


def exhaustive_subset_search(fitness: SubsetFitness) -> list[FitnessRecord]:
    """The records of all 16 subsets, in subset-index order. Pick with ``best_record``; a
    non-finite fitness raises DivergenceError (``evaluate_all``)."""
    return evaluate_all(fitness, all_subsets())


@SEARCH_METHODS.register("exhaustive")
def exhaustive_search(context: SearchContext) -> SearchResult:
    """Every static subset with short-run fitness; the best score wins."""
    records = exhaustive_subset_search(ShortRunFitness(context))
    return fitness_search_result("exhaustive", records, context.device.type)
