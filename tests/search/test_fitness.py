"""ShortRunFitness on the tiny detector, the subset cache, and deterministic tie-breaking."""

from __future__ import annotations

import dataclasses

import pytest

from rlpkd.levels import LEVELS
from rlpkd.search.context import SearchContext
from rlpkd.search.fitness import (
    CachedFitness,
    FitnessRecord,
    ShortRunFitness,
    best_record,
    short_run_config,
    total_cost,
)
from rlpkd.search.result import SearchCost


def _with_lam(context: SearchContext, lam: float) -> SearchContext:
    config = context.config
    config = dataclasses.replace(config, search=dataclasses.replace(config.search, lam=lam))
    return dataclasses.replace(context, config=config)


@pytest.mark.slow
def test_short_run_fitness_scores_and_costs_on_the_search_split(search_context):
    context = _with_lam(search_context, 0.5)
    fitness = ShortRunFitness(context)
    batch = context.config.student_schedule.batch_size
    images = (len(context.datasets.train) // batch) * batch  # one epoch, last batch dropped
    none, every = fitness(()), fitness(LEVELS)
    for record in (none, every):
        assert 0.0 <= record.ap <= 1.0
        assert record.score == pytest.approx(record.ap - 0.5 * record.kd_fraction)
        assert not record.cached
        assert record.cost.evaluations == 1 and record.cost.device == "cpu"
        assert record.cost.student_images == images
        assert record.cost.wall_time_s > 0
    assert none.kd_fraction == 0.0 and none.cost.kd_gflops == 0.0
    assert every.kd_fraction == pytest.approx(1.0)
    assert every.cost.kd_gflops == pytest.approx(images * context.flops.kd_flops(LEVELS) / 1e9)


@pytest.mark.slow
def test_short_run_fitness_caches_a_repeated_subset(search_context):
    fitness = ShortRunFitness(search_context)
    first = fitness(("P3",))
    again = fitness(["P3"])
    assert again.cached and not first.cached
    assert (again.levels, again.score, again.ap) == (first.levels, first.score, first.ap)
    assert again.cost == SearchCost(device="cpu")
    assert list(fitness.evaluated) == [("P3",)]
    assert total_cost([first, again], "cpu").evaluations == 1


def test_cached_fitness_calls_the_inner_fitness_once_per_subset(counting_fitness):
    inner = counting_fitness(len)
    fitness = CachedFitness(inner)
    records = [fitness(s) for s in [("P2",), ("P4", "P2"), ("P2",), ("P2", "P4")]]
    assert inner.calls == [("P2",), ("P2", "P4")]  # order normalised to LEVELS: one entry
    assert [r.cached for r in records] == [False, False, True, True]


def test_short_run_config_cuts_the_schedule_and_caps_warmup(tiny_config):
    config = dataclasses.replace(
        tiny_config,
        student_schedule=dataclasses.replace(
            tiny_config.student_schedule, epochs=12, warmup_steps=50, batch_size=4
        ),
        search=dataclasses.replace(tiny_config.search, fitness_epochs=2),
    )
    short = short_run_config(config, num_train=18)  # 4 steps per epoch, 8 in all
    assert short.student_schedule.epochs == 2
    assert short.student_schedule.warmup_steps == 2
    assert short.student_schedule.lr == config.student_schedule.lr
    assert config.student_schedule.epochs == 12  # the caller's config is not modified


def _record(levels: tuple[str, ...], score: float) -> FitnessRecord:
    return FitnessRecord(levels, score, 0.0, len(levels) / 4)


def test_best_record_breaks_ties_by_fewer_flops_then_subset_index():
    assert best_record([_record(("P2",), 0.1), _record(("P3",), 0.2)]).levels == ("P3",)
    tied = [_record(("P2", "P3"), 0.2), _record(("P5",), 0.2), _record(("P4",), 0.2)]
    assert best_record(tied).levels == ("P4",)
    assert best_record(reversed(tied)).levels == ("P4",)
    with pytest.raises(ValueError):
        best_record([])
