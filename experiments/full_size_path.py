"""The full-size path, one step of each kind, in fp32 and in bf16: does it run, do the losses agree,
how much memory does it take.

For a config (``configs/coco_r50_r18.yaml`` at 800 px) and its data, ``run_full_size_path`` runs
the four steps an experiment is made of, each from the same weights and batch in both precisions:

1. the teacher's forward (its FCOS detection loss on the batch, eval mode);
2. one all-level KD step of a fresh student (``kd_training_step``);
3. one step of the live env (``LevelSelectionEnv``: a student update with every slot on all
   levels, and the value reward's per-level values);
4. one policy-guided step (an untrained ``PolicyLevels`` picks each sample's levels from the step's
   own student forward, then the KD step).

bf16 runs the step under ``torch.autocast(device, bfloat16)`` (on CPU too, where the platform's
``runtime.amp`` is a no-op). ``compare_precisions`` sets the values of the two precisions side by
side against a stated tolerance. Peak memory: on CUDA the step's ``max_memory_allocated``; on CPU
the process's peak resident set after the step (``ru_maxrss``, which only grows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.level_selection_env import LevelSelectionEnv
from envs.observation import observation_dim
from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from rlpkd.config import Config, config_to_dict
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.data.coco import collate_detection
from rlpkd.distill.objective import ObjectiveTerms
from rlpkd.levels import LEVELS, levels_to_mask, subset_to_index
from rlpkd.models.detector import DetectorOutput, PyramidDetector
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.rundir import write_json
from rlpkd.runtime import autocast_for, configure_runtime, cpu_autocast, seed_everything
from rlpkd.training.distill_run import StudentTraining, new_student_training
from rlpkd.training.kd_step import detached_features, kd_training_step, student_forward

__all__ = [
    "PRECISIONS",
    "PARITY_RTOL",
    "PARITY_ATOL",
    "StepResult",
    "ValueParity",
    "precision_context",
    "run_full_size_path",
    "compare_precisions",
    "kd_loss_values",
    "results_document",
    "check_overrides",
    "run_full_size_check",
]

PRECISIONS = ("fp32", "bf16")
PARITY_RTOL = 0.05
"""bf16 agrees with fp32 when |bf16 - fp32| <= PARITY_RTOL * |fp32| + PARITY_ATOL: bf16 keeps 8
bits of mantissa (relative rounding 0.4%), and a loss sums many rounded terms."""
PARITY_ATOL = 1e-6
"""Small enough not to hide a disagreement of the value signal (about 1e-5 at the first step)."""


@dataclass
class StepResult:
    """One step of the path in one precision."""

    step: str
    precision: str
    seconds: float
    peak_memory_mib: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class ValueParity:
    """One value of one step in both precisions."""

    step: str
    value: str
    fp32: float
    bf16: float
    abs_diff: float
    rel_diff: float
    agrees: bool


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[bool]:
    """The ``runtime.amp`` flag of ``precision`` ('bf16': True, 'fp32': False); inside, bf16
    autocasts on CPU too (``cpu_autocast``), exactly where the platform autocasts on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    amp = precision == "bf16"
    with cpu_autocast() if amp and device.type == "cpu" else contextlib.nullcontext():
        yield amp


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def _measured(
    results: list[StepResult], step: str, precision: str, device: torch.device
) -> Iterator[dict[str, float]]:
    """Time the block and record its peak memory; the block fills the yielded values."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    values: dict[str, float] = {}
    start = time.perf_counter()
    yield values
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    results.append(StepResult(step, precision, seconds, _peak_memory_mib(device), values))


def _first_batch(datasets: DetectionDatasets, batch_size: int) -> DetectionBatch:
    return collate_detection([datasets.train[i] for i in range(batch_size)])


def kd_loss_values(terms: ObjectiveTerms) -> dict[str, float]:
    """The losses of one KD step that the two precisions are compared on."""
    return {
        "total_loss": float(terms.total.detach()),
        "detection_loss": float(terms.detection),
        "kd_raw_mean": float(terms.kd_raw.float().mean()),
    }


@dataclass(frozen=True)
class _PathInputs:
    """What every step of one precision reads."""

    config: Config
    teacher: PyramidDetector
    batch: DetectionBatch
    num_classes: int
    device: torch.device
    amp: bool


StepRun = Callable[[dict[str, float]], None]
"""A prepared step: runs it and fills the values (only this part is timed)."""


def _teacher_forward(inputs: _PathInputs) -> StepRun:
    def run(values: dict[str, float]) -> None:
        batch = inputs.batch
        with torch.no_grad(), autocast_for(inputs.device, inputs.amp):
            output = inputs.teacher(batch.images)
            losses = inputs.teacher.detection_loss(output, batch.boxes, batch.labels)
        values |= {f"{k}_loss": float(v) for k, v in losses.items() if v.numel() == 1}

    return run


def _kd_update(
    inputs: _PathInputs,
    training: StudentTraining,
    mask: torch.Tensor,
    phase: str,
    output: DetectorOutput | None = None,
) -> dict[str, float]:
    """One ``kd_training_step`` of a fresh student at ``mask``; its loss values."""
    terms = kd_training_step(
        training.student,
        inputs.teacher,
        training.objective,
        training.optimizer,
        inputs.batch,
        mask,
        amp=inputs.amp,
        phase=phase,
        step=1,
        output=output,
    )
    return kd_loss_values(terms)


def _kd_step(inputs: _PathInputs) -> StepRun:
    seed_everything(inputs.config.runtime.seed)
    training = new_student_training(inputs.config, inputs.num_classes, 1, inputs.device)
    all_levels = levels_to_mask(LEVELS).expand(len(inputs.batch), len(LEVELS)).clone()

    def run(values: dict[str, float]) -> None:
        values |= _kd_update(inputs, training, all_levels, "full-size KD step")

    return run


def _env_step(inputs: _PathInputs, work_dir: Path) -> StepRun:
    checkpoint = work_dir / "teacher.pt"
    if not checkpoint.is_file():
        torch.save({"model": inputs.teacher.state_dict()}, checkpoint)
    seed = inputs.config.runtime.seed
    env = LevelSelectionEnv(
        {
            "config": config_to_dict(inputs.config),
            "teacher_checkpoint": str(checkpoint),
            "snapshot_dir": str(work_dir / "snapshots"),
            "seed": seed,
        }
    )
    seed_everything(seed)
    env.reset(seed=seed, options={"snapshot_index": 0})
    everything = subset_to_index(LEVELS)

    def run(values: dict[str, float]) -> None:
        _, rewards, *_ = env.step({agent: everything for agent in env.agents})
        values["reward_mean"] = float(np.mean(list(rewards.values())))
        if env.last_step is not None and env.last_step.level_values is not None:
            means = np.asarray(env.last_step.level_values).mean(0)
            values |= {f"value_{lv}": float(v) for lv, v in zip(LEVELS, means, strict=True)}

    return run


def _policy_guided_step(inputs: _PathInputs) -> StepRun:
    config = inputs.config
    seed_everything(config.runtime.seed)
    training = new_student_training(config, inputs.num_classes, 1, inputs.device)
    module = build_level_module(
        observation_dim(inputs.num_classes), config.rl.hidden_sizes, config.rl.policy_head
    ).to(inputs.device)
    policy = PolicyLevels(module, config.data.level_thresholds, training.student)

    def run(values: dict[str, float]) -> None:
        output = student_forward(training.student, inputs.batch, inputs.amp)
        mask = policy.select_from_features(inputs.batch, detached_features(output), 0.0)
        values |= _kd_update(inputs, training, mask, "full-size policy-guided step", output)
        values["levels_per_sample"] = float(mask.float().sum(1).mean())

    return run


def run_full_size_path(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    work_dir: Path,
    device: torch.device,
    precision: str,
    progress: Callable[[str], None] = print,
) -> list[StepResult]:
    """The four steps (module docstring) in ``precision``, with ``runtime.amp`` set to match:
    the same seed, weights and batch whatever the precision. ``work_dir`` holds the teacher
    checkpoint and the snapshot the env reads (reused by the second precision)."""
    batch = _first_batch(datasets, config.student_schedule.batch_size).to(device)
    results: list[StepResult] = []
    with precision_context(device, precision) as amp:
        runtime = dataclasses.replace(config.runtime, amp=amp)
        inputs = _PathInputs(
            dataclasses.replace(config, runtime=runtime),
            freeze_teacher(teacher).to(device),
            batch,
            datasets.num_classes,
            device,
            amp,
        )
        steps = {
            "teacher_forward": lambda: _teacher_forward(inputs),
            "kd_step_all_levels": lambda: _kd_step(inputs),
            "env_step": lambda: _env_step(inputs, work_dir),
            "policy_guided_step": lambda: _policy_guided_step(inputs),
        }
        for name, prepare in steps.items():
            progress(f"[{precision}] {name}")
            run = prepare()  # models, env and snapshot: set-up, not timed
            with _measured(results, name, precision, device) as values:
                run(values)
    return results


def compare_precisions(
    fp32: list[StepResult],
    bf16: list[StepResult],
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> list[ValueParity]:
    """Every value of every step in fp32 and bf16, with whether they agree within the tolerance."""
    by_step = {result.step: result for result in bf16}
    rows = []
    for reference in fp32:
        other = by_step[reference.step]
        for name, value in reference.values.items():
            low = other.values[name]
            diff = abs(low - value)
            rows.append(
                ValueParity(
                    reference.step,
                    name,
                    value,
                    low,
                    diff,
                    diff / max(abs(value), 1e-12),
                    diff <= rtol * abs(value) + atol,
                )
            )
    return rows


def results_document(
    fp32: list[StepResult], bf16: list[StepResult], parity: list[ValueParity]
) -> dict:
    """The JSON a check writes: steps, parity rows and the tolerance."""
    return {
        "tolerance": {"rtol": PARITY_RTOL, "atol": PARITY_ATOL},
        "steps": [asdict(result) for result in [*fp32, *bf16]],
        "parity": [asdict(row) for row in parity],
        "all_agree": all(row.agrees for row in parity),
    }


def check_overrides(batch_size: int, device: str) -> list[str]:
    """``--set`` lines that make a config one check: ``batch_size`` images per step and env slots,
    one env step from the untrained snapshot, a held-out batch V of 2, no flips, no workers."""
    return [
        f"student_schedule.batch_size={batch_size}",
        f"rl.slots={batch_size}",
        "rl.episode_steps=1",
        "rl.snapshot_fractions=[0.0]",
        "rl.heldout_size=2",
        "data.hflip_prob=0.0",
        "data.preload=false",
        "data.num_workers=0",
        "runtime.progress=false",
        f"runtime.device={device}",
    ]


def run_full_size_check(config: Config, out: Path) -> dict:
    """Both precisions of the full-size path on ``config``'s data; ``<out>/full_size_check.json``
    holds the steps, the parity rows and the tolerance. Returns that document."""
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, progress=False)
    seed_everything(config.runtime.seed)
    teacher = build_teacher(config, datasets.num_classes)
    work_dir = Path(out)
    work_dir.mkdir(parents=True, exist_ok=True)
    runs = {
        precision: run_full_size_path(config, datasets, teacher, work_dir, device, precision)
        for precision in PRECISIONS
    }
    parity = compare_precisions(runs["fp32"], runs["bf16"])
    document = results_document(runs["fp32"], runs["bf16"], parity) | {
        "device": str(device),
        "image_size": config.data.image_size,
        "batch_size": config.student_schedule.batch_size,
        "teacher": asdict(config.teacher),
        "student": asdict(config.student),
        "torch": torch.__version__,
    }
    write_json(work_dir / "full_size_check.json", document)
    return document
