"""What Phase 2 records while PPO learns: TensorBoard ``policy/...`` scalars and ``policy_learning.json``.

``policy_scalars`` maps one iteration summary (``ppo_setup.iteration_summary``) to its TensorBoard
tags; ``PolicyLearningLog`` is ``train_policy``'s ``on_history``: after every iteration it writes
the new iteration's scalars to TensorBoard and rewrites the JSON record with the whole history,
so a resumed Phase 2 continues both rather than losing the iterations done before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
)
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY, Learner
from torch.utils.tensorboard import SummaryWriter

from policies.ppo_setup import ENV_METRICS, LEARNER_METRICS, SELECTION_METRICS
from rlpkd.levels import LEVELS
from rlpkd.rundir import write_json
from rlpkd.viz.policy_learning import (
    ENTROPY_TAG,
    HELDOUT_SCORE_TAG,
    KL_TAG,
    POLICY_LOSS_TAG,
    POLICY_TAG_PREFIX,
    RETURN_TAG,
    SELECTION_RATE_TAGS,
    VALUE_LOSS_TAG,
)

__all__ = [
    "POLICY_LEARNING_FILE",
    "SUMMARY_TAGS",
    "VALUE_SIGNAL_PREFIX",
    "policy_scalars",
    "PolicyLearningLog",
]

POLICY_LEARNING_FILE = "policy_learning.json"
"""``<out>/policy_learning.json``: ``{"history": [one iteration summary per PPO iteration], ...}``."""
SUMMARY_TAGS: dict[str, str] = {
    "episode_return_mean": RETURN_TAG,
    f"{LEARNER_METRICS}/{POLICY_LOSS_KEY}": POLICY_LOSS_TAG,
    f"{LEARNER_METRICS}/{VF_LOSS_KEY}": VALUE_LOSS_TAG,
    f"{LEARNER_METRICS}/{ENTROPY_KEY}": ENTROPY_TAG,
    f"{LEARNER_METRICS}/{LEARNER_RESULTS_KL_KEY}": KL_TAG,
    f"{LEARNER_METRICS}/{LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY}": "policy/vf_explained_var",
    f"{LEARNER_METRICS}/{Learner.TOTAL_LOSS_KEY}": "policy/total_loss",
    **{
        f"{SELECTION_METRICS}/rate_{level}": tag
        for level, tag in zip(LEVELS, SELECTION_RATE_TAGS, strict=True)
    },
    "heldout_score": HELDOUT_SCORE_TAG,
    "validation_score": "policy/validation_score",
    "heldout_static_score": "policy/heldout_static_score",
    "heldout_per_context_score": "policy/heldout_per_context_score",
    "heldout_predictor_score": "policy/heldout_predictor_score",
    "heldout_entropy": "policy/heldout_entropy",
    "heldout_share_off_most_common": "policy/heldout_share_off_most_common",
    "heldout_static_agreement": "policy/heldout_static_agreement",
    "heldout_score_minus_static": "policy/heldout_score_minus_static",
    f"{SELECTION_METRICS}/levels_per_decision": "policy/levels_per_decision",
    f"{SELECTION_METRICS}/reward_per_decision": "policy/reward_per_decision",
    "time_s": "policy/iteration_time_s",
}
"""Iteration-summary key -> TensorBoard tag."""
VALUE_SIGNAL_PREFIX = "value_"
"""Keys of the env's ``metrics()`` that start with this are its value-signal statistics; each is
written as ``policy/<key>`` (``policy/env_<key>`` should it equal one of ``SUMMARY_TAGS``)."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def policy_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one iteration summary: ``SUMMARY_TAGS`` and the env's value
    signal (``level_selection_env/value_*``), finite values only (a JSON ``null`` or a NaN loss
    is left out), plus ``iteration``."""
    scalars: dict[str, float] = {}
    if _finite(summary.get("iteration")):
        scalars["iteration"] = float(summary["iteration"])
    for key, tag in SUMMARY_TAGS.items():
        if _finite(summary.get(key)):
            scalars[tag] = float(summary[key])
    fixed_tags = set(SUMMARY_TAGS.values())
    env_prefix = f"{ENV_METRICS}/{VALUE_SIGNAL_PREFIX}"
    for key, value in summary.items():
        if key.startswith(env_prefix) and _finite(value):
            name = key.removeprefix(f"{ENV_METRICS}/")
            tag = f"{POLICY_TAG_PREFIX}{name}"
            scalars[f"{POLICY_TAG_PREFIX}env_{name}" if tag in fixed_tags else tag] = float(value)
    return scalars


class PolicyLearningLog:
    """Phase 2's record, kept current after every PPO iteration (``train_policy(on_history=...)``).

    Args:
        json_path: ``<out>/policy_learning.json``; rewritten atomically as ``{"history": ...}``
            with the whole history after every call (the caller adds the final record's other
            keys when Phase 2 ends).
        tensorboard_dir: where the ``policy/...`` event files go (``<out>/tensorboard/policy``).

    The first call carries the history restored from the PPO checkpoint. When it is empty
    (PPO starts over) the folder's older event files are deleted: they belong to another
    policy. When it is not, the earlier process wrote those iterations' events already, so only
    later iterations are written (all of them if the folder holds no event file).
    """

    def __init__(self, json_path: Path, tensorboard_dir: Path) -> None:
        self.json_path = Path(json_path)
        self.tensorboard_dir = Path(tensorboard_dir)
        self._writer: SummaryWriter | None = None
        self._written_through = 0

    def _event_files(self) -> list[Path]:
        return sorted(self.tensorboard_dir.glob("events.out.tfevents.*"))

    def _open(self, restored: list[dict[str, Any]]) -> SummaryWriter:
        if not restored:
            for old in self._event_files():
                old.unlink()
        elif self._event_files():
            self._written_through = max(int(r.get("iteration") or 0) for r in restored)
        self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(str(self.tensorboard_dir))
        return self._writer

    def __call__(self, history: list[dict[str, Any]]) -> None:
        """Write the iterations of ``history`` not written yet, then the JSON record."""
        writer = self._writer or self._open(history)
        for record in history:
            iteration = int(record.get("iteration") or 0)
            if iteration <= self._written_through:
                continue
            for tag, value in policy_scalars(record).items():
                if tag != "iteration":
                    writer.add_scalar(tag, value, iteration)
            self._written_through = iteration
        writer.flush()
        write_json(self.json_path, {"history": history})

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
