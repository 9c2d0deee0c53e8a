"""Fingerprints: a short, stable hash of the config sections (and extras) that decide a result.

A run directory stores the fingerprint of every artifact it holds (teacher, snapshot pool, PPO
policy, students, sweep trials); a later run reuses an artifact only when the fingerprint it
would compute matches. Changing how a fingerprint is computed changes its value and makes every
existing run recompute, so the values are pinned by ``tests/test_fingerprint.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlpkd.config import Config, config_to_dict

__all__ = [
    "DATA_LOCATION_KEYS",
    "PLANTED_RULE_KEYS",
    "LATER_FIELD_DEFAULTS",
    "fingerprint",
    "file_digest",
]

DATA_LOCATION_KEYS = ("root", "preload", "num_workers")
"""data.* keys that say where and how the images are read, not what they are: no fingerprint
covers them."""


PLANTED_RULE_KEYS = ("planted_class", "planted_levels", "planted_corruption")
"""``distill`` fields of the planted rule (``rlpkd.distill.planted``), hashed only when it is on."""

LATER_FIELD_DEFAULTS: dict[str, dict[str, Any]] = {
    "distill": {"planted_corruption": "rotate"},
    "rl": {"policy_head": "joint", "budget": None, "budget_pace": []},
    "teacher": {"init": ""},
    "student": {"init": ""},
}
"""{section: {field: value}} of fields added after runs were stored, with the value every earlier
run had: hashed only when a config differs from it, so earlier runs keep their fingerprints."""


def fingerprint(
    config: Config,
    sections: Iterable[str] | Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    drop: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The first 16 hex digits of the SHA-256 of the chosen config sections and ``extra``.

    Args:
        config: the resolved config.
        sections: the config sections hashed, by name; a mapping names each one's key in the
            hashed record ({key: section name}, e.g. ``{"schedule": "teacher_schedule"}``).
            The ``data`` section never includes ``DATA_LOCATION_KEYS``.
        extra: further values hashed beside the sections (a seed, a selector, a file digest);
            a key may not repeat a section's.
        drop: {section key: field names} left out of a section (settings that do not decide
            the result).
    """
    named = dict(sections) if isinstance(sections, Mapping) else {name: name for name in sections}
    relevant: dict[str, Any] = {}
    for key, section in named.items():
        values = config_to_dict(getattr(config, section))
        left_out = [*(DATA_LOCATION_KEYS if section == "data" else ()), *(drop or {}).get(key, ())]
        if section == "distill" and values.get("planted_class", -1) < 0:
            left_out += PLANTED_RULE_KEYS  # no planted rule: runs from before it keep their print
        for name, earlier in LATER_FIELD_DEFAULTS.get(section, {}).items():
            if values.get(name, earlier) == earlier:
                left_out.append(name)
        relevant[key] = {name: value for name, value in values.items() if name not in left_out}
    extra = dict(extra or {})
    clashes = sorted(set(extra) & set(relevant))
    if clashes:
        raise ValueError(f"fingerprint: extra key {clashes[0]!r} is also a section")
    relevant |= extra
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    """A short hash of a file's bytes ('' for no path; the path itself if it is not a file)."""
    if not path or not Path(path).is_file():
        return path
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
