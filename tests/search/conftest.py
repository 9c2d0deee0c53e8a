"""Search fixtures: a SearchContext on the tiny dataset and cheap stand-in fitness functions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from rlpkd.data.build import build_datasets, heldout_split
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import NUM_LEVELS, subset_to_index
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.search.context import SearchContext
from rlpkd.search.fitness import FitnessRecord


@pytest.fixture
def search_context(tiny_config) -> SearchContext:
    """A CPU SearchContext: tiny data (18 search-train / 6 held-out images), an untrained frozen
    debug teacher, 1-epoch fitness runs at batch size 8."""
    config = dataclasses.replace(
        tiny_config,
        student_schedule=dataclasses.replace(tiny_config.student_schedule, batch_size=8),
        search=dataclasses.replace(tiny_config.search, fitness_epochs=1),
    )
    datasets = build_datasets(config.data, progress=False)
    torch.manual_seed(0)
    teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    flops = flops_model_from_config(config, datasets.num_classes)
    return SearchContext(
        config,
        heldout_split(datasets, 0.25, 0),
        teacher,
        flops,
        torch.device("cpu"),
        seed=0,
        progress=False,
    )


class CountingFitness:
    """A cheap fitness from a score function; counts its calls (no caching of its own)."""

    def __init__(self, score: Callable[[tuple[str, ...]], float]) -> None:
        self.score = score
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, levels: tuple[str, ...]) -> FitnessRecord:
        self.calls.append(tuple(levels))
        return FitnessRecord(
            levels=tuple(levels),
            score=self.score(tuple(levels)),
            ap=0.0,
            kd_fraction=len(levels) / NUM_LEVELS,
        )


@pytest.fixture
def counting_fitness() -> Callable[[Callable[[tuple[str, ...]], float]], CountingFitness]:
    """Build a CountingFitness from a score function."""
    return CountingFitness


def table_score(levels: tuple[str, ...]) -> float:
    """A fixed, tie-free score per subset: minus the Hamming distance to {P3, P4} (index 6, the
    maximum), plus a small index term to break ties."""
    index = subset_to_index(levels)
    return -bin(index ^ 6).count("1") + 0.001 * index
