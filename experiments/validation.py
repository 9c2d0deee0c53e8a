"""Names in a config that must come from a registry: KD losses, search methods, level specs,
dataset regimes, ResNet depths, rewards and KD-loss parameters.

``rlpkd.config`` checks types and ranges without importing the rest of the package; this module
sits above the registries and finishes the job, so a wrong name fails at load (with the valid
names), not after the teacher has trained. ``experiments.cli.config_from_args`` calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from envs.rewards import REWARDS
from experiments.controls import BUDGET_CONTROLS
from rlpkd.config import Config
from rlpkd.data.synthetic import REGIMES
from rlpkd.distill.losses import KD_LOSSES
from rlpkd.errors import ConfigError
from rlpkd.models.backbone import RESNET_LAYERS
from rlpkd.search.methods import search_method_names
from rlpkd.training.level_selection import parse_level_spec

__all__ = ["validate_config_names", "kd_loss_parameters"]

_LOSS_ARGUMENTS = ("self", "student_channels", "teacher_channels", "num_classes")


def kd_loss_parameters(name: str) -> list[str]:
    """The hyperparameters (``distill.loss_params`` keys) the KD loss ``name`` accepts."""
    builder = KD_LOSSES.get(name)
    return [p for p in inspect.signature(builder).parameters if p not in _LOSS_ARGUMENTS]


def _check_name(key: str, value: object, valid: Iterable[object], source: str) -> None:
    valid = list(valid)
    if value not in valid:
        raise ConfigError(
            f"{source}: '{key}' is {value!r}; allowed: {', '.join(str(v) for v in valid)}"
        )


def _check_names(key: str, values: list[object], valid: Iterable[object], source: str) -> None:
    valid = list(valid)
    for index, value in enumerate(values):
        _check_name(f"{key}[{index}]", value, valid, source)


def _check_level_specs(key: str, specs: list[str], source: str) -> None:
    for index, spec in enumerate(specs):
        try:
            parse_level_spec(spec)
        except ConfigError as error:
            raise ConfigError(f"{source}: '{key}[{index}]' is {spec!r}: {error}") from None


def validate_config_names(config: Config, source: str = "config") -> None:
    """Check every registry name and level spec of ``config``; a one-line ConfigError naming the
    key, the value and the valid names otherwise."""
    _check_name("distill.loss", config.distill.loss, KD_LOSSES.names(), source)
    accepted = kd_loss_parameters(config.distill.loss)
    for name in config.distill.loss_params:
        if name not in accepted:
            raise ConfigError(
                f"{source}: 'distill.loss_params.{name}' is not a parameter of KD loss "
                f"{config.distill.loss!r}; allowed: {', '.join(accepted) or 'none'}"
            )
    try:
        parse_level_spec(config.distill.levels)
    except ConfigError as error:
        raise ConfigError(
            f"{source}: 'distill.levels' is {config.distill.levels!r}: {error}"
        ) from None
    for key, specs in (
        ("experiment.level_sets", config.experiment.level_sets),
        ("experiment.ablation", config.experiment.ablation),
        ("rl.static_baselines", config.rl.static_baselines),
        ("sweep.baselines", config.sweep.baselines),
    ):
        _check_level_specs(key, specs, source)
    _check_names("sweep.nas_methods", config.sweep.nas_methods, search_method_names(), source)
    _check_name("data.regime", config.data.regime, REGIMES, source)
    if config.experiment.controls is not None:
        _check_names(
            "experiment.controls", config.experiment.controls, list(BUDGET_CONTROLS), source
        )
    _check_name("rl.reward", config.rl.reward, REWARDS.names(), source)
    if config.rl.learner == "bank" and not REWARDS.get(config.rl.reward).full_information:
        raise ConfigError(
            f"{source}: 'rl.learner' is 'bank', which needs the reward of every subset; "
            f"rl.reward {config.rl.reward!r} gives only the chosen one's: set rl.learner: live"
        )
    _check_names("meta.regimes", config.meta.regimes, REGIMES, source)
    depths = sorted(RESNET_LAYERS)
    _check_name("teacher.depth", config.teacher.depth, depths, source)
    _check_name("student.depth", config.student.depth, depths, source)
    _check_names("meta.student_depths", config.meta.student_depths, depths, source)
