"""Typed experiment config from YAML: defaults, dotted overrides, clear errors.

A config is data (a ``yaml.SafeLoader`` whose floats follow YAML 1.2: ``1e-3`` is a float). This
module loads and saves it; the schema (every section, field, default, allowed values and one-line
docstring) is ``rlpkd.config_schema``, its checks ``rlpkd.config_validation``. The resolved config
is written to ``<out>/config.yaml`` so a run is reproducible from that file alone.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rlpkd import config_schema
from rlpkd.config_rules import Rule
from rlpkd.config_schema import *  # noqa: F403  (its __all__: the sections, re-exported)
from rlpkd.config_schema import Config
from rlpkd.config_validation import validate_config
from rlpkd.errors import ConfigError

__all__ = [
    *config_schema.__all__,  # the schema's sections and rules, re-exported
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "validate_config",
    "parse_config_yaml",
    "ConfigYamlLoader",
    "Rule",
]


class ConfigYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats: PyYAML's YAML 1.1 resolver reads ``1e-3`` (no
    dot) as a string; here it is a float, in files and in ``--set`` values alike."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
ConfigYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigYamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_config_yaml(text: str) -> Any:
    """Parse config YAML (a file's text or one ``--set`` value) with :class:`ConfigYamlLoader`."""
    return yaml.load(text, Loader=ConfigYamlLoader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' expects a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' expects a mapping, got {value!r}")
        return {str(k): _coerce(v, value_type, f"{key}.{k}", source) for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{source}: unknown key '{where}'; valid keys here: {', '.join(names)}")
    default = cls()
    kwargs = {}
    for name in names:
        key = f"{prefix}.{name}" if prefix else name
        if name in values:
            current = getattr(default, name)
            if dataclasses.is_dataclass(current) and isinstance(values[name], dict):
                merged = config_to_dict(current) | values[name]
                kwargs[name] = _build(type(current), merged, key, source)
            else:
                kwargs[name] = _coerce(values[name], hints[name], key, source)
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (YAML-safe) of a config dataclass."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a validated Config; unknown keys and wrong types raise ConfigError."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return _build(Config, values, "", source)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as config YAML) to a raw config dict."""
    result = copy.deepcopy(values) if values else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{key}' is not a section")
        try:
            node[keys[-1]] = parse_config_yaml(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return result


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides and validate types and ranges (not registry names:
    see ``experiments.validation``)."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = parse_config_yaml(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config file ({error})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if overrides:
        values = apply_overrides(values, overrides)
        source = f"{source} with --set overrides"
    config = config_from_dict(values, source)
    validate_config(config, source)
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
