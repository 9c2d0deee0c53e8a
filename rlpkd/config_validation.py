"""Validating a loaded config: every field against the rule declared beside it
(``rlpkd.config_schema``, finite floats) and the rules that tie fields together; the first
violation is a one-line ConfigError naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any

from rlpkd.config_rules import check_value
from rlpkd.config_schema import FIELD_RULES, Config, ModelConfig
from rlpkd.errors import ConfigError

__all__ = [
    "NON_EMPTY_LISTS",
    "TORCHVISION_FCOS_ARCHITECTURE",
    "check_init_architecture",
    "validate_config",
]

NON_EMPTY_LISTS = ("meta.regimes", "meta.lambdas", "meta.student_depths", "rl.snapshot_fractions")
"""List fields that must hold at least one item."""

TORCHVISION_FCOS_ARCHITECTURE = {"depth": 50, "width": 1.0, "fpn_channels": 256, "head_convs": 4}
"""The ``ModelConfig`` that torchvision's ``fcos_resnet50_fpn`` (a ``teacher.init`` file) fits."""


def check_init_architecture(spec: ModelConfig, section: str, source: str) -> None:
    """Raise a one-line ConfigError unless ``spec`` (the config's ``section``) is the architecture
    of torchvision's ``fcos_resnet50_fpn`` with no ImageNet weights to load first."""
    for name, needed in TORCHVISION_FCOS_ARCHITECTURE.items():
        value = getattr(spec, name)
        if value != needed:
            raise ConfigError(
                f"{source}: '{section}.{name}' is {value!r}; {section}.init (torchvision's "
                f"fcos_resnet50_fpn) needs {needed}"
            )
    if spec.pretrained:
        raise ConfigError(
            f"{source}: '{section}.pretrained' is true; {section}.init replaces the ImageNet "
            "weights, set pretrained: false"
        )


def _check_fields(section: Any, prefix: str, source: str) -> None:
    rules = FIELD_RULES[type(section)]
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        key = f"{prefix}.{item.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, key, source)
            continue
        check_value(key, value, rules[item.name], source)
        if key in NON_EMPTY_LISTS and not value:
            raise ConfigError(f"{source}: '{key}' is empty; it needs at least one item")


def validate_config(config: Config, source: str = "config") -> None:
    """Check every value's range (``FIELD_RULES``, finite floats) and the rules that tie fields
    together; the first violation is a one-line ConfigError naming the key, the value and what is
    allowed."""
    for item in dataclasses.fields(config):
        _check_fields(getattr(config, item.name), item.name, source)
    thresholds = config.data.level_thresholds
    if len(thresholds) != 3 or any(
        a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)
    ):
        raise ConfigError(
            f"{source}: 'data.level_thresholds' is {thresholds}; allowed: 3 increasing numbers"
        )
    if config.data.source == "coco":
        for name in ("train_images", "train_annotations", "val_images", "val_annotations"):
            if not getattr(config.data, name):
                raise ConfigError(
                    f"{source}: 'data.{name}' is empty; data.source 'coco' needs all four paths"
                )
    if config.student.init:
        raise ConfigError(
            f"{source}: 'student.init' is {config.student.init!r}; allowed: '' (only the "
            "teacher starts from torchvision's FCOS)"
        )
    if config.teacher.init:
        check_init_architecture(config.teacher, "teacher", source)
    search = config.search
    if search.sample_size > search.population:
        raise ConfigError(
            f"{source}: 'search.sample_size' is {search.sample_size}; allowed: at most "
            f"search.population ({search.population})"
        )
    if search.tau_min > search.tau_max:
        raise ConfigError(
            f"{source}: 'search.tau_min' is {search.tau_min}; allowed: at most search.tau_max "
            f"({search.tau_max})"
        )
    experiment = config.experiment
    if experiment.control_seeds and (
        not experiment.seeds
        or experiment.control_seeds[0] != experiment.seeds[0]
        or not set(experiment.control_seeds) <= set(experiment.seeds)
    ):
        raise ConfigError(
            f"{source}: 'experiment.control_seeds' is {experiment.control_seeds}; allowed: empty, "
            f"or seeds of experiment.seeds ({experiment.seeds}) starting with its first"
        )
    pace = config.rl.budget_pace
    if pace and sum(pace) <= 0:
        raise ConfigError(
            f"{source}: 'rl.budget_pace' is {pace}; allowed: empty, or weights not all 0"
        )
    if config.rl.minibatch_size > config.rl.train_batch_size:
        raise ConfigError(
            f"{source}: 'rl.minibatch_size' is {config.rl.minibatch_size}; allowed: at most "
            f"rl.train_batch_size ({config.rl.train_batch_size})"
        )
