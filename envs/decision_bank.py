"""The decision bank: value-reward decisions kept with the value of every level (DESIGN §5).

The value signal gives each decision the values ``v_il`` of all four levels, so the reward of all
16 subsets of that context is known. The live env (``LevelSelectionEnv``, the real distillation)
stays the source of every context and value; ``collect_decision_bank`` drives it from the snapshot
pool with uniformly random subsets and keeps, per decision, its observation, its four values, the
image it was about, the student's progress and the update it came from. PPO then trains on the
bank (``envs.bank_bandit_env``) at the cost of a lookup per decision instead of a student update
and a value signal.

The bank is split by *image* (``split_by_image``): held-out contexts come from images that no
training context comes from, and learning is measured on them (``policies.heldout_score``).

Files are ``<snapshot_dir>/decision_bank_<fingerprint>.npz``, the fingerprint hashing what decides
the contexts (``decision_bank_fingerprint``), written atomically and reused when present.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from envs.level_selection_env import LevelSelectionEnv, StepRecord
from rlpkd.atomic_files import atomic_write
from rlpkd.config import Config
from rlpkd.errors import CheckpointError
from rlpkd.fingerprint import file_digest, fingerprint
from rlpkd.levels import NUM_LEVELS, NUM_SUBSETS, subsets_to_masks

__all__ = [
    "SUBSET_LEVELS",
    "PROGRESS_QUARTERS",
    "DecisionBank",
    "BankSplit",
    "split_by_image",
    "decision_bank_fingerprint",
    "decision_bank_path",
    "collect_decision_bank",
]

PROGRESS_QUARTERS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Default bins of ``DecisionBank.value_by_progress``: the schedule's quarters."""

SUBSET_LEVELS: np.ndarray = subsets_to_masks(torch.arange(NUM_SUBSETS)).numpy().astype(np.float64)
"""[16, 4] membership: row a holds 1 at the levels of subset a (``rlpkd.levels`` encoding)."""


@dataclass
class DecisionBank:
    """N decision contexts, each with the raw values of all four levels."""

    observations: np.ndarray
    """[N, obs_dim] float32: what each decision saw (``envs.observation``)."""
    level_values: np.ndarray
    """[N, 4] float64: ``v_il`` of every level, in held-out detection-loss units (raw)."""
    image_ids: np.ndarray
    """[N] int64: the image each decision was about."""
    progress: np.ndarray
    """[N] float64: the student's training progress at the decision."""
    updates: np.ndarray
    """[N] int64: the live env's update the decision came from."""
    subset_costs: np.ndarray
    """[16] float64: ``kd_flops(a) / kd_flops(all)`` of every subset."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """How the bank was made: its fingerprint, collection time and value-signal GFLOPs."""

    def __len__(self) -> int:
        return len(self.level_values)

    def select(self, index: np.ndarray) -> DecisionBank:
        """The contexts at ``index`` (a bool mask or positions), same costs and metadata."""
        return DecisionBank(
            self.observations[index],
            self.level_values[index],
            self.image_ids[index],
            self.progress[index],
            self.updates[index],
            self.subset_costs,
            dict(self.metadata),
        )

    def value_unit(self) -> float:
        """``s``: the mean over contexts of ``|Σ_l v_il|``, the typical value of distilling all
        levels on one sample (the value reward's unit, fixed for a whole Phase 2)."""
        unit = float(np.abs(self.level_values.sum(axis=1)).mean()) if len(self) else 0.0
        if not unit > 0:
            raise ValueError(f"the decision bank's values give no unit (mean |Σ_l v| = {unit})")
        return unit

    def value_by_progress(
        self, edges: Sequence[float] = PROGRESS_QUARTERS, unit: float | None = None
    ) -> list[dict[str, Any]]:
        """When the value signal says KD pays: per training-progress bin ``[lo, hi)`` (the last
        bin closed), its contexts, their mean all-level value ``Σ_l v_il`` in units of ``unit``
        (default: this bank's ``value_unit``, the typical all-level value; NaN for an empty
        bin), and ``share_of_value``: the bin's mean over the sum of the bins' means, i.e. its
        share of the value when every bin holds as many decisions (equal bins of the schedule
        do), whatever the bank's own mix. Shares are NaN when a bin's mean is negative or no
        bin's is positive (a share of a signed sum means nothing); an empty bin's is 0."""
        totals = self.level_values.sum(axis=1) / (self.value_unit() if unit is None else unit)
        rows = []
        for index, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            last = index == len(edges) - 2
            inside = (self.progress >= lo) & (
                (self.progress <= hi) if last else (self.progress < hi)
            )
            count = int(inside.sum())
            rows.append(
                {
                    "progress": [float(lo), float(hi)],
                    "contexts": count,
                    "mean_value": float(totals[inside].mean()) if count else float("nan"),
                }
            )
        means = [row["mean_value"] for row in rows if row["contexts"]]
        shares_mean_something = sum(means) > 0 and min(means) >= 0
        for row in rows:
            if not row["contexts"]:
                row["share_of_value"] = 0.0
            elif shares_mean_something:
                row["share_of_value"] = row["mean_value"] / sum(means)
            else:
                row["share_of_value"] = float("nan")
        return rows

    def reward_table(self, lam: float, unit: float) -> np.ndarray:
        """[N, 16] the exact reward of every subset of every context:
        ``Σ_{l∈a} v_il / s − λ · kd_flops(a) / kd_flops(all)``."""
        return self.level_values @ SUBSET_LEVELS.T / unit - lam * self.subset_costs[None, :]

    def save(self, path: Path) -> Path:
        """Write the bank to ``path`` (``.npz``) atomically."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    observations=self.observations,
                    level_values=self.level_values,
                    image_ids=self.image_ids,
                    progress=self.progress,
                    updates=self.updates,
                    subset_costs=self.subset_costs,
                    metadata=np.array(json.dumps(self.metadata)),
                )

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> DecisionBank:
        """A bank written by ``save``.

        Raises:
            CheckpointError: the file is missing, truncated or not a decision bank.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                bank = cls(
                    data["observations"].astype(np.float32),
                    data["level_values"].astype(np.float64),
                    data["image_ids"].astype(np.int64),
                    data["progress"].astype(np.float64),
                    data["updates"].astype(np.int64),
                    data["subset_costs"].astype(np.float64),
                    json.loads(str(data["metadata"])),
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise CheckpointError(
                f"cannot read the decision bank {path} ({type(error).__name__}: {error}); "
                "delete it to collect it again"
            ) from None
        if bank.level_values.shape[1:] != (NUM_LEVELS,) or bank.subset_costs.shape != (
            NUM_SUBSETS,
        ):
            raise CheckpointError(f"{path} is not a decision bank; delete it to collect it again")
        return bank

    @classmethod
    def from_steps(
        cls, steps: Sequence[StepRecord], subset_costs: np.ndarray, metadata: dict | None = None
    ) -> DecisionBank:
        """One context per decision of ``steps`` (records of a full-information reward)."""
        if any(step.level_values is None for step in steps):
            raise ValueError("a decision bank needs a full-information reward (rl.reward: value)")
        return cls(
            np.concatenate([s.observations for s in steps]).astype(np.float32),
            np.concatenate([s.level_values for s in steps]).astype(np.float64),
            np.concatenate([s.image_ids for s in steps]).astype(np.int64),
            np.concatenate([np.full(len(s.image_ids), s.progress) for s in steps]),
            np.concatenate([np.full(len(s.image_ids), s.update) for s in steps]).astype(np.int64),
            np.asarray(subset_costs, dtype=np.float64),
            dict(metadata or {}),
        )


@dataclass
class BankSplit:
    """A bank split by image into the contexts PPO trains on and those learning is measured on."""

    train: DecisionBank
    heldout: DecisionBank
    heldout_images: np.ndarray
    """The image ids whose contexts are all held out."""


def split_by_image(bank: DecisionBank, heldout_fraction: float, seed: int) -> BankSplit:
    """Hold out every context of a seeded ``heldout_fraction`` of the bank's images (at least
    one image, and at least one left to train on).

    Raises:
        ValueError: the bank has fewer than two images.
    """
    images = np.unique(bank.image_ids)
    if len(images) < 2:
        raise ValueError(f"a decision bank needs contexts of at least 2 images, has {len(images)}")
    count = min(max(1, round(heldout_fraction * len(images))), len(images) - 1)
    order = np.random.default_rng(seed).permutation(images)
    heldout_images = np.sort(order[:count])
    held = np.isin(bank.image_ids, heldout_images)
    return BankSplit(bank.select(~held), bank.select(held), heldout_images)


def decision_bank_fingerprint(config: Config, teacher_checkpoint: Path) -> str:
    """A hash of what decides the bank's contexts: data, models, schedules, KD (a planted rule
    included), the value signal's held-out batch, the env's batch and episode shape, the
    snapshot stages, the bank's size, the seed and the teacher's bytes. Not λ and not PPO's
    settings: one bank serves every price and learner setting."""
    rl = config.rl
    return fingerprint(
        config,
        ("data", "teacher", "student", "teacher_schedule", "student_schedule", "distill"),
        {
            "bank": {
                "heldout_size": rl.heldout_size,
                "holdout_fraction": config.search.holdout_fraction,
                "slots": rl.slots,
                "episode_steps": rl.episode_steps,
                "snapshot_fractions": list(rl.snapshot_fractions),
                "decisions": rl.bank_decisions,
                "stages": "round-robin",
            },
            "seed": config.runtime.seed,
            "teacher_weights": file_digest(str(teacher_checkpoint)),
        },
    )


def decision_bank_path(directory: Path, fingerprint_: str) -> Path:
    """``<directory>/decision_bank_<fingerprint>.npz``."""
    return Path(directory) / f"decision_bank_{fingerprint_}.npz"


def collect_decision_bank(
    env: LevelSelectionEnv, decisions: int, seed: int, progress: bool = True
) -> DecisionBank:
    """Drive the live env with uniformly random subsets until ``decisions`` contexts are kept.

    Episodes start from the snapshot stages in turn (round robin), so every stage of the
    student's schedule gives the same share of the bank; a random stage per episode gave one
    planted-rule bank three times as many contexts from one of its two stages as from the other.

    Random subsets, not the policy's: the bank then does not depend on the learner (one bank
    serves every λ, seed and PPO setting, and the held-out score is measured on the same contexts
    throughout), and the students of its episodes see every level mix. The values of a context do
    not depend on its own action (they are measured before the update); the action moves the
    episode's student a little for its later steps.

    Raises:
        ValueError: ``env``'s reward has no full information (it must be ``value``).
    """
    if not env.reward.full_information:
        raise ValueError(
            f"a decision bank needs a full-information reward; the env's is {env.reward.name!r}"
        )
    rng = np.random.default_rng([seed, 0xBA4C])
    env.reset_metrics()
    steps: list[StepRecord] = []
    kept = 0
    start = time.perf_counter()
    bar = tqdm(total=decisions, desc="decision bank", unit="decision", disable=not progress)
    try:
        episode = 0
        while kept < decisions:
            # the stages in turn, so that each gives the same share of the contexts
            env.reset(seed=int(rng.integers(2**31)), options={"snapshot_index": episode})
            episode += 1
            done = False
            while not done and kept < decisions:
                actions = {agent: int(rng.integers(NUM_SUBSETS)) for agent in env.agents}
                _, _, _, truncateds, _ = env.step(actions)
                done = truncateds["__all__"]
                steps.append(env.last_step)
                kept += len(env.agents)
                bar.update(len(env.agents))
    finally:
        bar.close()
    metrics = env.metrics()
    bank = DecisionBank.from_steps(
        steps,
        env.fraction_table.numpy(),
        {
            "collection_time_s": time.perf_counter() - start,
            "value_gflops": metrics["value_gflops"],
            "live_decisions": int(metrics["decisions"]),
            "episodes": episode,
        },
    )
    return bank.select(np.arange(min(decisions, len(bank))))
