"""The snapshot pool episodes start from: one all-level KD student saved at several training stages.

Why: a sample's reward is the drop of its teacher–student gap over one student update, and that
drop depends strongly on how far the student is in its training (early on every level's gap falls
fast; later the gaps are small and distilling buys less). Episodes that always started from a fresh
student would teach the policy only the first steps of a run, while Phase 3 applies it over a whole
schedule. So one student is distilled at all levels over ``config.student_schedule`` (the same
seed, data order and learning-rate schedule as the fixed all-level baseline) and its state is saved
at each fraction in ``config.rl.snapshot_fractions`` (0.0 = the fresh initialisation). An episode
loads one of them — student, KD objective (adapters, running level scales), optimiser moments,
learning-rate position and the running per-level gap — and continues that run for
``config.rl.episode_steps`` updates with the policy's masks.

Files are named by a fingerprint of everything that determines them and reused when present.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from envs.observation import new_running_gap
from rlpkd.checkpoint_io import load_checkpoint, save_checkpoint_atomic
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.coco import build_dataloader
from rlpkd.distill.normalise import RunningLevelScale
from rlpkd.distill.planted import PlantedCorruptionKD, planted_objective_state
from rlpkd.errors import CheckpointError, ConfigError
from rlpkd.fingerprint import fingerprint
from rlpkd.levels import NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.training.distill_run import StudentTraining, new_student_training
from rlpkd.training.kd_step import kd_training_step

__all__ = [
    "StudentTrainingState",
    "new_training_state",
    "snapshot_fingerprint",
    "snapshot_path",
    "check_snapshot_files",
    "build_snapshot_pool",
    "load_snapshot",
]


@dataclass
class StudentTrainingState(StudentTraining):
    """A student in the middle of its KD run: what trains it (``StudentTraining``: student, KD
    objective, optimiser, LR schedule) and what an episode continues from besides."""

    running_gap: RunningLevelScale
    """EMA of the raw per-level KD loss (the observation's running gap)."""
    step: int
    """Student updates done so far."""
    total_steps: int
    """Updates of the whole student schedule."""

    @property
    def progress(self) -> float:
        """Training progress ``step / total_steps`` in [0, 1]."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps > 0 else 0.0


def _schedule_steps(config: Config, datasets: DetectionDatasets) -> int:
    """Updates in the student schedule (drop_last batches per epoch x epochs)."""
    schedule = config.student_schedule
    return schedule.epochs * (len(datasets.train) // schedule.batch_size)


def new_training_state(
    config: Config, num_classes: int, total_steps: int, device: torch.device
) -> StudentTrainingState:
    """A fresh student, KD objective, optimiser and LR schedule, as ``distill_student`` builds them."""
    training = new_student_training(config, num_classes, total_steps, device)
    return StudentTrainingState(
        **vars(training), running_gap=new_running_gap().to(device), step=0, total_steps=total_steps
    )


def pool_config(config: Config) -> Config:
    """The config the pool's students train with: ``config`` without a planted rule.

    A planted rule (``rlpkd.distill.planted``) corrupts the pairs a level policy decides on; the
    students it starts from are trained with the true teacher, as a student under a policy that
    avoids the corrupted pairs would be. (Trained with the corruption on every pair, they partly
    fit it before the policy ever decides, and the value of the corrupted pairs shrinks:
    docs/results.md, *Planted rule*.) The env and the value probes still use ``config``'s
    objective, corruption included.
    """
    if config.distill.planted_class < 0:
        return config
    distill = dataclasses.replace(config.distill, planted_class=-1)
    return dataclasses.replace(config, distill=distill)


def snapshot_fingerprint(config: Config) -> str:
    """A hash of everything that determines the snapshot student (data, models, schedule, KD, seed;
    a planted rule does not: ``pool_config``)."""
    sections = ("data", "teacher", "teacher_schedule", "student", "student_schedule", "distill")
    return fingerprint(pool_config(config), sections, {"seed": config.runtime.seed})


def snapshot_path(out_dir: Path, fingerprint: str, fraction: float) -> Path:
    """``<out_dir>/student_<fingerprint>_f<fraction>.pt``."""
    return Path(out_dir) / f"student_{fingerprint}_f{fraction:.4f}.pt"


SNAPSHOT = "snapshot"
SNAPSHOT_KEYS = ("fingerprint", "step", "total_steps", "model", "kd", "optimizer", "running_gap")


def _read_snapshot(path: Path, config: Config, map_location: str | torch.device = "cpu") -> dict:
    """The dict saved at ``path``, checked to be a whole snapshot of this config.

    Raises:
        CheckpointError: missing, truncated, foreign, or made from another config.
    """
    saved = load_checkpoint(path, SNAPSHOT, SNAPSHOT_KEYS, map_location)
    if saved["fingerprint"] != snapshot_fingerprint(config):
        raise CheckpointError(
            f"snapshot {path} was made from a different config; delete it to rebuild it"
        )
    return saved


def _snapshot_fractions(config: Config) -> list[float]:
    fractions = [float(f) for f in config.rl.snapshot_fractions]
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ConfigError(f"rl.snapshot_fractions must be fractions in [0, 1], got {fractions}")
    return fractions


def check_snapshot_files(config: Config, out_dir: Path) -> list[Path]:
    """The snapshot files of ``config``'s pool that already exist in ``out_dir``, each read once
    to prove it whole (reads only).

    Raises:
        CheckpointError: an existing file is truncated or foreign (delete it to rebuild it).
    """
    fingerprint = snapshot_fingerprint(config)
    paths = [snapshot_path(out_dir, fingerprint, f) for f in _snapshot_fractions(config)]
    existing = [path for path in paths if path.is_file()]
    for path in existing:
        _read_snapshot(path, config)
    return existing


def _save_if_missing(
    state: StudentTrainingState, missing: dict[int, list[float]], out_dir: Path, fingerprint: str
) -> None:
    """Save the state under every missing fraction that falls on its step."""
    for fraction in missing.get(state.step, []):
        # atomic: parallel env runners may read the pool while it is written
        save_checkpoint_atomic(
            snapshot_path(out_dir, fingerprint, fraction),
            _snapshot_state(state, fingerprint, fraction),
        )


def _snapshot_state(
    state: StudentTrainingState, fingerprint: str, fraction: float
) -> dict[str, object]:
    return {
        "fingerprint": fingerprint,
        "fraction": float(fraction),
        "step": state.step,
        "total_steps": state.total_steps,
        "model": state.student.state_dict(),
        "kd": state.objective.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "running_gap": state.running_gap.state_dict(),
    }


def build_snapshot_pool(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    out_dir: Path,
    progress: bool = False,
) -> list[Path]:
    """The snapshot files of ``config.rl.snapshot_fractions`` (in that order), trained if missing.

    Trains one student with all-level KD from ``config.runtime.seed`` up to the last missing
    fraction (on the teacher's device; torch's global RNG is left as it was) and saves its state at
    each missing fraction; existing files with the same fingerprint are reused untouched.
    """
    fractions = _snapshot_fractions(config)
    out_dir = Path(out_dir)
    existing = check_snapshot_files(config, out_dir)  # a truncated file fails here, not in PPO
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = snapshot_fingerprint(config)
    paths = [snapshot_path(out_dir, fingerprint, f) for f in fractions]
    total_steps = _schedule_steps(config, datasets)
    missing: dict[int, list[float]] = {}
    for fraction, path in zip(fractions, paths, strict=True):
        if path not in existing:
            missing.setdefault(round(fraction * total_steps), []).append(fraction)
    if not missing:
        return paths
    device = next(teacher.parameters()).device
    schedule = config.student_schedule
    seed = config.runtime.seed
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        state = new_training_state(pool_config(config), datasets.num_classes, total_steps, device)
        loader = build_dataloader(
            datasets.train, schedule.batch_size, shuffle=True, seed=seed, drop_last=True
        )
        all_levels = torch.ones(schedule.batch_size, NUM_LEVELS, dtype=torch.bool)
        last_step = max(missing)
        _save_if_missing(state, missing, out_dir, fingerprint)
        bar = tqdm(total=last_step, desc="snapshot pool", disable=not progress)
        while state.step < last_step:
            for batch in loader:
                terms = kd_training_step(
                    state.student,
                    teacher,
                    state.objective,
                    state.optimizer,
                    batch.to(device),
                    all_levels,
                    schedule.grad_clip,
                    config.runtime.amp,
                    phase="the policy-learning snapshot pool",
                    step=state.step + 1,
                )
                state.scheduler.step()
                state.running_gap.update(terms.kd_raw, all_levels)
                state.step += 1
                _save_if_missing(state, missing, out_dir, fingerprint)
                bar.update(1)
                if state.step >= last_step:
                    break
        bar.close()
    return paths


def load_snapshot(
    path: Path, config: Config, num_classes: int, device: torch.device
) -> StudentTrainingState:
    """The training state saved at ``path`` (``rlpkd.checkpoint_io.load_checkpoint``), ready to
    continue.

    The optimiser is a new object holding the saved moments; the LR schedule resumes at the saved
    step.

    Raises:
        CheckpointError: the file is missing, truncated, foreign or made from another config.
    """
    saved = _read_snapshot(path, config, device)
    state = new_training_state(config, num_classes, int(saved["total_steps"]), device)
    state.student.load_state_dict(saved["model"])
    kd_state = saved["kd"]
    if isinstance(state.objective.kd, PlantedCorruptionKD):
        # the pool trained without the rule (pool_config): its KD loss is the wrapper's base
        kd_state = planted_objective_state(kd_state)
    state.objective.load_state_dict(kd_state)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.running_gap.load_state_dict(saved["running_gap"])
    state.step = int(saved["step"])
    # LambdaLR recomputes lr = initial_lr * factor(last_epoch) on each step from here
    state.scheduler.last_epoch = state.step
    return state
