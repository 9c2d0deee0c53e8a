"""Random search: seeded uniform draws, repeats not retrained, the best score picked."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from rlpkd.search.fitness import CachedFitness, best_record
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.random_search import random_subset_search
from tests.search.conftest import table_score


def test_repeats_are_evaluated_once_and_the_best_score_is_picked(counting_fitness):
    inner = counting_fitness(table_score)
    records = random_subset_search(CachedFitness(inner), 40, random.Random(0))
    drawn = [record.levels for record in records]
    assert len(drawn) == 40 and len(set(drawn)) < 40  # 40 draws from 16 must repeat
    assert sorted(inner.calls) == sorted(set(drawn))  # each distinct subset trained once
    assert [record.cached for record in records] == [
        levels in drawn[:i] for i, levels in enumerate(drawn)
    ]
    assert best_record(records).score == max(table_score(levels) for levels in drawn)


def test_draws_are_seeded_and_cover_the_subsets(counting_fitness):
    def draws(seed: int) -> list[tuple[str, ...]]:
        records = random_subset_search(counting_fitness(table_score), 200, random.Random(seed))
        return [record.levels for record in records]

    assert draws(1) == draws(1) != draws(2)
    assert len(set(draws(1))) == 16


@pytest.mark.slow
def test_random_search_on_the_tiny_detector(search_context):
    config = search_context.config
    search = dataclasses.replace(config.search, random_samples=3)
    context = dataclasses.replace(search_context, config=dataclasses.replace(config, search=search))
    result = SEARCH_METHODS.get("random")(context)
    assert result.method == "random" and len(result.trace) == 3
    distinct = {entry["levels"] for entry in result.trace}
    assert set(result.scores) == distinct
    assert result.cost.evaluations == len(distinct)
    assert result.cost.student_images > 0 and result.cost.wall_time_s > 0
    assert result.scores[result.levels_name] == max(result.scores.values())
    json.dumps(result.to_dict())
