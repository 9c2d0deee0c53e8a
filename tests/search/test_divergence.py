"""A search never picks from a NaN: a non-finite fitness, or a diverged DARTS / GDAS step, stops
the search with DivergenceError naming what diverged."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from rlpkd.errors import DivergenceError
from rlpkd.levels import subset_to_index
from rlpkd.search.darts import darts_search
from rlpkd.search.evolution import regularized_evolution
from rlpkd.search.exhaustive import exhaustive_subset_search
from rlpkd.search.fitness import (
    CachedFitness,
    FitnessRecord,
    ShortRunFitness,
    best_record,
)
from rlpkd.search.gdas import gdas_search
from rlpkd.search.random_search import random_subset_search
from tests.search.conftest import table_score


def _nan_at(levels: tuple[str, ...]):
    def score(subset: tuple[str, ...]) -> float:
        return math.nan if subset == levels else table_score(subset)

    return score


def test_exhaustive_search_with_a_nan_fitness_raises_instead_of_picking(counting_fitness):
    fitness = counting_fitness(_nan_at(("P3",)))
    with pytest.raises(DivergenceError) as caught:
        exhaustive_subset_search(fitness)
    error = caught.value
    assert error.phase == "search fitness of P3"
    assert error.step == subset_to_index(("P3",)) + 1 and error.term == "score"
    assert len(fitness.calls) == error.step  # stopped at once


def test_evolution_with_a_nan_fitness_raises_before_a_tournament(counting_fitness):
    fitness = counting_fitness(lambda subset: math.nan)
    with pytest.raises(DivergenceError, match=r"search fitness of .* at step 1: loss term 'score'"):
        regularized_evolution(fitness, 3, 2, 4, random.Random(0))
    assert len(fitness.calls) == 1


def test_random_search_with_a_nan_fitness_raises(counting_fitness):
    with pytest.raises(DivergenceError, match="'score' is nan"):
        random_subset_search(counting_fitness(lambda subset: math.nan), 3, random.Random(0))


def test_best_record_refuses_a_nan_score():
    good = FitnessRecord(("P2",), score=0.3, ap=0.3, kd_fraction=0.5)
    bad = FitnessRecord(("P3",), score=math.nan, ap=math.nan, kd_fraction=0.2)
    with pytest.raises(DivergenceError, match="search fitness of P3 at step 2: loss term 'AP'"):
        best_record([good, bad])
    assert best_record([good]) is good


def test_cached_fitness_does_not_cache_a_nan_record():
    calls = []

    def evaluate(levels):
        calls.append(levels)
        return FitnessRecord(levels, score=math.inf, ap=0.1, kd_fraction=0.1)

    fitness = CachedFitness(evaluate)
    for _ in range(2):
        with pytest.raises(DivergenceError, match="'score' is inf"):
            fitness(("P4",))
    assert fitness.evaluated == {} and len(calls) == 2


def _huge_lr(context, steps: int = 3):
    config = context.config
    schedule = dataclasses.replace(config.student_schedule, lr=1_000_000.0, batch_size=4)
    search = dataclasses.replace(config.search, gradient_steps=steps, lam=0.0)
    return dataclasses.replace(
        context, config=dataclasses.replace(config, student_schedule=schedule, search=search)
    )


@pytest.mark.slow
def test_short_run_fitness_that_diverges_names_the_subset(search_context):
    fitness = ShortRunFitness(_huge_lr(search_context))
    with pytest.raises(DivergenceError) as caught:
        fitness(("P3",))
    assert caught.value.phase == "search fitness of P3 (short run, seed 0)"
    assert not math.isfinite(caught.value.value)


@pytest.mark.slow
@pytest.mark.parametrize(("search", "name"), [(darts_search, "DARTS"), (gdas_search, "GDAS")])
def test_a_gradient_search_that_diverges_raises_instead_of_picking(search_context, search, name):
    with pytest.raises(DivergenceError) as caught:
        search(_huge_lr(search_context))
    error = caught.value
    assert error.phase == f"the {name} search (seed 0)"
    assert error.term in {"training loss", "validation loss", "gate gradient", "gradient norm"}
    assert 1 <= error.step <= 3 and not math.isfinite(error.value)
