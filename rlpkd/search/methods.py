"""The registry of search methods: ``SEARCH_METHODS.get(name)(context) -> SearchResult``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from rlpkd.registry import Registry
from rlpkd.search.context import SearchContext
from rlpkd.search.result import SearchResult

__all__ = ["SEARCH_METHODS", "BUILTIN_MODULES", "SearchMethod", "run_search", "search_method_names"]

SearchMethod = Callable[[SearchContext], SearchResult]
SEARCH_METHODS: Registry[SearchResult] = Registry("search method")
BUILTIN_MODULES = (
    "rlpkd.search.darts",
    "rlpkd.search.gdas",
    "rlpkd.search.evolution",
    "rlpkd.search.random_search",
    "rlpkd.search.exhaustive",
)


def run_search(name: str, context: SearchContext) -> SearchResult:
    """Run the search method registered as ``name`` (an unknown name lists the valid ones)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers the built-in methods
    return SEARCH_METHODS.get(name)(context)


def search_method_names() -> list[str]:
    """The names of every built-in search method."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return SEARCH_METHODS.names()
