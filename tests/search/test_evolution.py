"""Regularized (aging) evolution: queue discipline, mutation, call count, best-ever, seeding."""

from __future__ import annotations

import json
import random

import pytest

from rlpkd.levels import all_subsets
from rlpkd.search.evolution import mutate, regularized_evolution
from rlpkd.search.methods import SEARCH_METHODS
from tests.search.conftest import table_score

P, S, C = 5, 3, 20


def _run(fitness, seed=0):
    return regularized_evolution(fitness, P, S, C, random.Random(seed))


def test_population_is_a_fifo_queue_of_fixed_size(counting_fitness):
    outcome = _run(counting_fitness(table_score))
    sizes = [len(step.population) for step in outcome.steps]
    assert sizes == [1, 2, 3, 4, 5] + [P] * C
    for cycle, step in enumerate(outcome.steps[P:]):
        born = [member.born for member in step.population]
        assert step.removed.born == cycle  # the oldest member ages out
        assert born == list(range(cycle + 1, cycle + 1 + P))  # oldest first, child last
        assert step.population[-1] is step.individual


def test_aging_removes_the_oldest_even_when_it_is_the_best(counting_fitness):
    # Every call scores lower than the one before, so the oldest member is always the best.
    calls = iter(range(1000))
    outcome = _run(counting_fitness(lambda levels: -next(calls)))
    first = outcome.steps[0].individual
    assert outcome.steps[P].removed is first
    for step in outcome.steps[P:]:
        previous = outcome.steps[step.individual.born - 1].population
        best = max(previous, key=lambda m: m.record.score)
        assert step.removed is best  # kept under "remove the worst", removed under aging
    assert outcome.best == first.record


def test_children_differ_from_their_parent_by_one_level(counting_fitness):
    outcome = _run(counting_fitness(table_score))
    for step in outcome.steps[:P]:
        assert step.parent is None
    for step in outcome.steps[P:]:
        assert len(set(step.individual.levels) ^ set(step.parent.levels)) == 1
        previous = outcome.steps[step.individual.born - 1].population
        assert step.parent in previous


def test_mutation_flips_one_level_and_keeps_level_order():
    generator = random.Random(0)
    for subset in all_subsets():
        for _ in range(4):
            child = mutate(subset, generator)
            assert len(set(child) ^ set(subset)) == 1
            assert child == tuple(sorted(child, key=lambda level: int(level[1])))


def test_parent_is_the_tournament_best(counting_fitness):
    # With the tournament as large as the population, the parent is the population's best.
    outcome = regularized_evolution(counting_fitness(table_score), P, P, C, random.Random(1))
    for step in outcome.steps[P:]:
        previous = outcome.steps[step.individual.born - 1].population
        assert step.parent.record.score == max(m.record.score for m in previous)


def test_fitness_calls_and_best_ever(counting_fitness):
    fitness = counting_fitness(table_score)
    outcome = _run(fitness)
    assert len(fitness.calls) == P + C == len(outcome.history)
    assert [r.levels for r in outcome.history] == fitness.calls
    assert outcome.best.score == max(table_score(levels) for levels in fitness.calls)
    assert outcome.best == max(outcome.history, key=lambda record: record.score)


def test_evolution_climbs_to_the_optimum_of_a_smooth_table(counting_fitness):
    # Tournament selection plus one-level mutation hill-climbs a Hamming-smooth landscape.
    for seed in range(5):
        outcome = regularized_evolution(
            counting_fitness(table_score), P, S, 60, random.Random(seed)
        )
        assert outcome.best.levels == ("P3", "P4")


def test_same_seed_same_history(counting_fitness):
    first = [r.levels for r in _run(counting_fitness(table_score), seed=3).history]
    again = [r.levels for r in _run(counting_fitness(table_score), seed=3).history]
    other = [r.levels for r in _run(counting_fitness(table_score), seed=4).history]
    assert first == again
    assert first != other


def test_invalid_settings_are_rejected(counting_fitness):
    with pytest.raises(ValueError, match="sample_size"):
        regularized_evolution(counting_fitness(len), 2, 3, 1, random.Random(0))


@pytest.mark.slow
def test_evolution_search_on_the_tiny_detector(search_context):
    settings = search_context.config.search
    result = SEARCH_METHODS.get("evolution")(search_context)
    assert result.method == "evolution"
    steps = settings.population + settings.cycles
    assert [entry["step"] for entry in result.trace] == list(range(steps))
    assert all(
        len(e["population"]) == settings.population for e in result.trace[-settings.cycles :]
    )
    distinct = {entry["levels"] for entry in result.trace}
    assert set(result.scores) == distinct
    assert result.cost.evaluations == len(distinct)  # cached repeats cost nothing
    assert sum(not e["cached"] for e in result.trace) == len(distinct)
    assert result.scores[result.levels_name] == max(result.scores.values())
    json.dumps(result.to_dict())
