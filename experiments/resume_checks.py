"""Before ``train_rl`` writes anything: may ``--resume`` continue this run, and are the files it
will load whole? (``resume_keys``, ``check_resume``, ``check_inputs_and_checkpoints``; the sweep's
``check_resumable`` shares ``changed_keys``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from envs.observation import observation_dim
from envs.snapshots import check_snapshot_files
from experiments.policy_environment import check_decision_bank
from experiments.policy_learning import policy_fingerprint
from policies.ppo_checkpoints import latest_checkpoint
from policies.weights import (
    read_weights_file,
)
from rlpkd.config import Config, config_from_dict, config_to_dict
from rlpkd.errors import CheckpointError, ConfigError, ResumeMismatchError
from rlpkd.fingerprint import DATA_LOCATION_KEYS
from rlpkd.rundir import RunDirectory
from rlpkd.training.teacher_phase import check_teacher_checkpoint

__all__ = [
    "RESUME_IGNORED_KEYS",
    "RESUME_SECTIONS",
    "changed_keys",
    "resume_keys",
    "check_resume",
    "check_inputs_and_checkpoints",
]


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """'key old -> new' for every key whose value differs between two flat configs (sorted)."""
    return [
        f"{key} {_shown(before.get(key))} -> {_shown(after.get(key))}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


RESUME_IGNORED_KEYS = tuple(f"data.{key}" for key in DATA_LOCATION_KEYS)
"""Keys of the fingerprinted sections that ``--resume`` may change (they do not change results)."""
RESUME_SECTIONS = ("data", "teacher", "student", "teacher_schedule", "student_schedule")
RESUME_SECTIONS += ("distill", "eval", "rl")
"""Config sections that a train_rl artifact's fingerprint covers (with meta.warm_start and
runtime.seed); experiment.seeds, experiment.control_seeds and rl.static_baselines only choose
which students run."""


def resume_keys(config: Config) -> dict[str, Any]:
    """{dotted key: value} of every setting a train_rl artifact's fingerprint covers (teacher,
    snapshots, PPO policy, students), less ``RESUME_IGNORED_KEYS``."""
    flat = {
        f"{name}.{key}": value
        for name in RESUME_SECTIONS
        for key, value in config_to_dict(getattr(config, name)).items()
    }
    flat |= {"meta.warm_start": config.meta.warm_start, "runtime.seed": config.runtime.seed}
    flat.pop("rl.static_baselines")
    return {key: value for key, value in flat.items() if key not in RESUME_IGNORED_KEYS}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _recorded_config(path: Path) -> Config:
    """The config a run recorded in ``config.yaml`` (types checked, values as recorded)."""
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ResumeMismatchError(
            f"--resume: cannot read {path} ({first_line}); rerun without --resume"
        ) from None
    try:
        return config_from_dict(values, str(path))
    except ConfigError as error:
        raise ResumeMismatchError(f"--resume: {error}; rerun without --resume") from None


def check_resume(config: Config, out: Path | None = None) -> None:
    """Stop a ``--resume`` whose config differs from the run's where it matters.

    Compares ``resume_keys`` of ``config`` with those of ``<out>/config.yaml`` and the PPO
    checkpoint's fingerprint with ``policy_fingerprint(config)`` (which also covers the warm
    start's contents). Reads only; a run directory without ``config.yaml`` passes.

    Raises:
        ResumeMismatchError: one line naming every changed key as ``key old -> new``.
    """
    out = Path(config.runtime.out if out is None else out)
    recorded_path = out / "config.yaml"
    if not recorded_path.is_file():
        return
    before = resume_keys(_recorded_config(recorded_path))
    after = resume_keys(config)
    changed = changed_keys(before, after)
    if not changed:
        changed = _policy_inputs_changed(config, out)
    if changed:
        raise ResumeMismatchError(
            f"--resume: {out} was started with another config: {', '.join(changed)}; rerun "
            "without --resume to redo the affected phases, or use another --out"
        )


def _policy_inputs_changed(config: Config, out: Path) -> list[str]:
    """What differs from the inputs of the run's PPO checkpoint when no config key does."""
    progress_path = out / "checkpoints" / "policy" / "progress.json"
    try:
        recorded = json.loads(progress_path.read_text()).get("fingerprint", "")
    except (OSError, ValueError, AttributeError):
        return []  # no checkpoint (or an unreadable one: Phase 2 reports it)
    # with equal keys only the warm start's bytes can differ; a record from an older version
    # (no or another fingerprint) is not an error: Phase 2 starts over and says so
    if config.meta.warm_start and recorded and recorded != policy_fingerprint(config):
        return [f"the contents of meta.warm_start {config.meta.warm_start!r} changed"]
    return []


def check_inputs_and_checkpoints(
    config: Config, run_dir: RunDirectory, resume: bool, num_classes: int
) -> None:
    """Read, before anything is written, every file the run will load: the warm start, and the
    teacher, snapshot pool, decision bank and PPO progress record an earlier run left in
    ``run_dir``.

    Raises:
        CheckpointError: one of them is missing (the warm start), truncated or foreign; or the
            warm start was made for another observation size or ``rl.hidden_sizes``.
    """

    if config.meta.warm_start:
        warm = read_weights_file(Path(config.meta.warm_start))
        obs_dim = observation_dim(num_classes)
        if (
            warm.obs_dim != obs_dim
            or list(warm.hidden_sizes) != list(config.rl.hidden_sizes)
            or warm.policy_head != config.rl.policy_head
        ):
            raise CheckpointError(
                f"meta.warm_start {config.meta.warm_start} holds a policy for {warm.obs_dim} "
                f"observations, hidden sizes {warm.hidden_sizes} and a {warm.policy_head} head; "
                f"this run's has {obs_dim}, {list(config.rl.hidden_sizes)} (rl.hidden_sizes) "
                f"and {config.rl.policy_head} (rl.policy_head)"
            )
    check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")
    check_snapshot_files(config, run_dir.checkpoints / "snapshots")
    check_decision_bank(
        config, run_dir.checkpoints / "teacher.pt", run_dir.checkpoints / "snapshots"
    )
    if resume:
        latest_checkpoint(run_dir.checkpoints / "policy")
