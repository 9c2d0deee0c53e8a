"""The allowed values of a config field: ``Rule`` and its constructors, and ``ruled``, which
declares a dataclass field with its rule beside it (``rlpkd.config_schema`` uses it for every
field; ``validate_config`` checks them)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlpkd.errors import ConfigError

__all__ = [
    "Rule",
    "at_least",
    "greater_than",
    "within",
    "one_of",
    "matching",
    "ANY",
    "POSITIVE",
    "NON_NEGATIVE",
    "COUNT",
    "FRACTION",
    "MOMENTUM",
    "NON_EMPTY",
    "RULE_KEY",
    "ruled",
    "check_value",
]


@dataclass(frozen=True)
class Rule:
    """A constraint on one config value (each item of a list value): ``test`` and its text."""

    test: Callable[[Any], bool]
    """True when the value is allowed."""
    allowed: str
    """What is allowed, for the error message (e.g. '>= 1', 'in [0, 1]')."""


def at_least(low: float) -> Rule:
    """value >= low."""
    return Rule(lambda v: v >= low, f">= {low}")


def greater_than(low: float) -> Rule:
    """value > low."""
    return Rule(lambda v: v > low, f"> {low}")


def within(low: float, high: float, closed_high: bool = True) -> Rule:
    """low <= value <= high (or < high when ``closed_high`` is False)."""
    if closed_high:
        return Rule(lambda v: low <= v <= high, f"in [{low}, {high}]")
    return Rule(lambda v: low <= v < high, f"in [{low}, {high})")


def one_of(*choices: Any) -> Rule:
    """value in choices."""
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def matching(pattern: str, description: str) -> Rule:
    """A string that fully matches the regular expression ``pattern``."""
    compiled = re.compile(pattern)
    return Rule(lambda v: compiled.fullmatch(v) is not None, description)


ANY = Rule(lambda v: True, "anything")
POSITIVE = greater_than(0)
NON_NEGATIVE = at_least(0)
COUNT = at_least(1)
FRACTION = within(0, 1)
MOMENTUM = within(0, 1, closed_high=False)
NON_EMPTY = Rule(lambda v: v != "", "a non-empty string")

RULE_KEY = "rule"
"""The key of a field's ``Rule`` in its dataclass metadata (``ruled``)."""


def ruled(
    rule: Rule, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING
) -> Any:
    """A dataclass field with its allowed values beside it: its ``default`` (or ``factory``) and
    the ``Rule`` that ``validate_config`` checks it against (a list field: each item)."""
    return field(default=default, default_factory=factory, metadata={RULE_KEY: rule})


def check_value(key: str, value: Any, rule: Rule, source: str) -> None:
    """Raise a one-line ConfigError unless ``value`` (each item of a list or dict) is finite and
    allowed by ``rule``; ``key`` and ``source`` name it."""
    items = value.items() if isinstance(value, dict) else None
    if items is not None:
        for name, item in items:
            check_value(f"{key}.{name}", item, rule, source)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_value(f"{key}[{index}]", item, rule, source)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' is {value}; it must be a finite number")
    if not rule.test(value):
        raise ConfigError(f"{source}: '{key}' is {value!r}; allowed: {rule.allowed}")
