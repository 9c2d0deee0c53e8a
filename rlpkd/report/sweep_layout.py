"""The sweep's trial layout on disk, and reading it: which trials finished, which failed.

A sweep directory holds ``trials/<trial_id>/`` per trial: ``metrics.json`` once it finished,
``failed.json`` (``FAILED_FILE``) when it diverged; ``trials.json`` (``TRIAL_MANIFEST``) lists the
ids of the sweep's current trials and ``config.yaml`` its config (``search.lam``).
``experiments.tune.trials`` writes this layout; the report reads it through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from rlpkd.errors import DataError
from rlpkd.rundir import read_json

__all__ = [
    "TRIAL_KINDS",
    "TRIAL_MANIFEST",
    "FAILED_FILE",
    "collect_trials",
    "collect_failed_trials",
    "sweep_lam",
]

TRIAL_KINDS: tuple[str, ...] = ("rl", "nas", "baseline", "static")
"""Trial kinds, in the order their rows appear."""
TRIAL_MANIFEST = "trials.json"
"""``<sweep>/trials.json``: the ids of the sweep's current trials (the report shows only these)."""
REQUIRED_FIELDS: tuple[str, ...] = ("method", "kind", "seed")
FAILED_FILE = "failed.json"
"""``<trial>/failed.json``: a trial that diverged: {"error", "phase", "step", "term", "value", ...}
(written by ``experiments.tune.trials.run_trial``). Such a trial has no fresh ``metrics.json``;
the report lists it as failed."""


def _read_trial(path: Path) -> dict[str, Any] | None:
    try:
        metrics = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"corrupt trial metrics {path}: {error}; delete it to drop the trial"
        ) from None
    if not isinstance(metrics, dict):
        raise DataError(f"trial metrics {path} is not a JSON object")
    if "student_fingerprint" in metrics and "kind" not in metrics:
        # a trial still running: its student wrote its own fields, the trial's come at the end
        return None
    missing = [key for key in REQUIRED_FIELDS if key not in metrics]
    if missing:
        raise DataError(f"trial metrics {path} lacks {', '.join(missing)}")
    if metrics["kind"] not in TRIAL_KINDS:
        raise DataError(
            f"trial metrics {path}: unknown kind {metrics['kind']!r}; "
            f"valid: {', '.join(TRIAL_KINDS)}"
        )
    metrics.setdefault("trial_id", path.parent.name)
    return metrics


def _current_trial_ids(sweep_dir: Path) -> set[str] | None:
    """The ids in ``<sweep>/trials.json`` (written by the sweep), or None without the file."""
    path = Path(sweep_dir) / TRIAL_MANIFEST
    if not path.is_file():
        return None
    return set(read_json(path)["trial_ids"])


def _trial_files(sweep_dir: Path, name: str) -> list[Path]:
    """``<sweep>/trials/*/<name>`` of the trials the sweep lists (all without ``trials.json``)."""
    trials_dir = Path(sweep_dir) / "trials"
    if not trials_dir.is_dir():
        raise DataError(f"no trials directory at {trials_dir}; is {sweep_dir} a sweep directory?")
    current = _current_trial_ids(sweep_dir)
    paths = sorted(trials_dir.glob(f"*/{name}"))
    if current is not None:
        paths = [path for path in paths if path.parent.name in current]
    return paths


def collect_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """The metrics of every finished trial under ``<sweep_dir>/trials`` (sorted by trial dir).

    Trials still running are skipped, and so are trials the sweep's ``trials.json`` no longer
    lists (e.g. a lambda removed from the config) when that file exists, and failed trials
    (``failed.json``), whatever ``metrics.json`` an earlier run left beside it.
    """
    paths = [
        path
        for path in _trial_files(sweep_dir, "metrics.json")
        if not (path.parent / FAILED_FILE).is_file()
    ]
    trials = [_read_trial(path) for path in paths]
    return [trial for trial in trials if trial is not None]


def _read_failure(path: Path) -> dict[str, Any]:
    try:
        failure = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"corrupt trial failure record {path}: {error}") from None
    if not isinstance(failure, dict):
        raise DataError(f"trial failure record {path} is not a JSON object")
    missing = [key for key in (*REQUIRED_FIELDS, "error") if key not in failure]
    if missing:
        raise DataError(f"trial failure record {path} lacks {', '.join(missing)}")
    failure.setdefault("trial_id", path.parent.name)
    return failure


def collect_failed_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """The ``failed.json`` of every failed (diverged) trial the sweep lists, sorted by trial dir:
    {trial_id, kind, method, seed, error, phase, step, term, ...}."""
    return [_read_failure(path) for path in _trial_files(sweep_dir, FAILED_FILE)]


def sweep_lam(sweep_dir: Path) -> float:
    """``search.lam`` of the sweep's ``config.yaml`` (0 when the file or the key is absent)."""
    path = Path(sweep_dir) / "config.yaml"
    if not path.is_file():
        return 0.0
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataError(f"unreadable sweep config {path}: {error}") from None
    search = config.get("search") if isinstance(config, dict) else None
    lam = search.get("lam", 0.0) if isinstance(search, dict) else 0.0
    return float(lam)
