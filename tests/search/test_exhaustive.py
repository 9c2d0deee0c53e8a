"""The exhaustive oracle: all 16 static subsets, each trained once, the best score picked."""

from __future__ import annotations

import dataclasses

import pytest

from rlpkd.levels import LEVELS, all_subsets, format_levels
from rlpkd.search.exhaustive import exhaustive_subset_search
from rlpkd.search.fitness import best_record
from rlpkd.search.methods import SEARCH_METHODS
from tests.search.conftest import table_score


def test_exhaustive_evaluates_the_16_subsets_once_each(counting_fitness):
    fitness = counting_fitness(table_score)
    records = exhaustive_subset_search(fitness)
    assert fitness.calls == all_subsets()
    assert best_record(records).levels == ("P3", "P4")


def test_exhaustive_ties_go_to_fewer_kd_flops(counting_fitness):
    records = exhaustive_subset_search(counting_fitness(lambda levels: 0.0))
    assert best_record(records).levels == ()


@pytest.mark.slow
def test_exhaustive_search_on_the_tiny_detector(search_context):
    config = search_context.config
    context = dataclasses.replace(
        search_context,
        config=dataclasses.replace(config, search=dataclasses.replace(config.search, lam=0.1)),
    )
    result = SEARCH_METHODS.get("exhaustive")(context)
    assert result.method == "exhaustive"
    assert result.cost.evaluations == 16
    assert set(result.scores) == {format_levels(subset) for subset in all_subsets()}
    assert result.cost.kd_gflops > 0 and result.cost.device == "cpu"
    assert result.scores[result.levels_name] == max(result.scores.values())
    for entry in result.trace:
        assert entry["score"] == pytest.approx(entry["ap"] - 0.1 * entry["kd_fraction"])
    assert {entry["levels"]: entry["kd_fraction"] for entry in result.trace}[
        format_levels(LEVELS)
    ] == pytest.approx(1.0)
