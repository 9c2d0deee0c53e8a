"""One check of a GPU machine (``scripts/gpu_check.py``, sized for at most 10 minutes on one GPU;
not yet run on one): how fast a KD step runs against what the card can do, whether bf16 gives
fp32's losses, and whether four sweep trials share one GPU well.

Three measurements, each in this one process so that ratios are side by side:

1. ``dense_matmul_tflops``: the card's measured dense bf16 matmul rate (square matmuls), the
   yardstick of the KD step.
2. ``kd_step_speed``: R50-FPN -> R18-FPN KD steps at 512 px in bf16 (``experiments.bench``):
   images/s and achieved TFLOP/s of ours (all levels) and of torchvision's FCOS step, and ours
   as a fraction of the matmul rate. Goal: >= 0.4.
3. ``kd_step_parity``: one KD step from the same weights and batch in fp32 and in bf16.
4. ``sweep_sharing``: the same four student trials run as a Ray Tune sweep with
   ``sweep.trial_gpus: 0.25`` (all four on one GPU at once), then one at a time; throughput of
   each (trials per hour of sweep wall time). Goal: shared >= 2x serial.

Without CUDA every part still runs, on the CPU at small sizes (a test of the check, not a
measurement): Ray declares one logical GPU, so the sweep is placed as on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from experiments.bench.kd_step_speed import StepBenchSettings, benchmark_kd_steps, build_kd_bench
from experiments.full_size_path import (
    PRECISIONS,
    StepResult,
    compare_precisions,
    kd_loss_values,
    precision_context,
)
from experiments.tune.sweep import run_sweep
from experiments.tune.trials import teacher_path, trial_dir
from policies.ray_runtime import start_ray
from rlpkd.config import Config, ModelConfig
from rlpkd.levels import LEVELS, levels_to_mask
from rlpkd.rundir import read_json
from rlpkd.runtime import seed_everything

__all__ = [
    "CheckSizes",
    "GPU_SIZES",
    "CPU_SIZES",
    "dense_matmul_tflops",
    "kd_step_speed",
    "kd_step_parity",
    "sweep_sharing",
    "SWEEP_TRIALS",
    "device_facts",
    "check_document",
]

SWEEP_TRIALS = ("P2", "P3", "P4", "P5")
"""The four fixed-level student trials of the sharing measurement (one seed each)."""


@dataclass(frozen=True)
class CheckSizes:
    """How big each measurement is."""

    matmul_side: int
    """Side of the square bf16 matmuls."""
    image_size: int
    """Side of the KD step's square images, px."""
    batch_size: int
    """Images per KD step."""
    steps: int
    """Timed KD steps (after ``steps // 2 + 1`` untimed ones)."""


GPU_SIZES = CheckSizes(matmul_side=8192, image_size=512, batch_size=16, steps=20)
CPU_SIZES = CheckSizes(matmul_side=1024, image_size=128, batch_size=2, steps=2)

TEACHER = ModelConfig(depth=50, width=1.0, fpn_channels=256, head_convs=4)
STUDENT = ModelConfig(depth=18, width=1.0, fpn_channels=256, head_convs=4)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_matmul_tflops(device: torch.device, side: int, repeats: int = 20) -> float:
    """Measured TFLOP/s of ``side``-square bf16 matmuls on ``device`` (2 side^3 FLOPs each)."""
    a = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    b = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronise(device)
    return 2 * side**3 * repeats / (time.perf_counter() - start) / 1e12


def kd_step_speed(device: torch.device, sizes: CheckSizes, matmul_tflops: float) -> dict[str, Any]:
    """R50 -> R18 KD steps (all levels) and torchvision's FCOS KD step in bf16 at
    ``sizes.image_size``; adds ours as a fraction of ``matmul_tflops``."""
    settings = StepBenchSettings(
        TEACHER,
        STUDENT,
        sizes.image_size,
        sizes.batch_size,
        device,
        steps=sizes.steps,
        warmup=sizes.steps // 2 + 1,
    )
    with precision_context(device, "bf16"):
        result = benchmark_kd_steps(settings, amp=True, level_sets=(LEVELS,))
    ours = next(t for t in result["timings"] if t["name"] == "ours all")
    result["ours_fraction_of_matmul_rate"] = ours["achieved_tflops"] / matmul_tflops
    return result


def kd_step_parity(device: torch.device, sizes: CheckSizes) -> list[dict[str, Any]]:
    """One all-level KD step from the same weights and batch in fp32 and bf16: total, detection
    and mean KD loss of each, their relative difference and whether they agree within
    ``full_size_path``'s tolerance."""
    settings = StepBenchSettings(TEACHER, STUDENT, sizes.image_size, sizes.batch_size, device)
    results = {}
    for precision in PRECISIONS:
        seed_everything(0)
        bench = build_kd_bench(settings)
        mask = levels_to_mask(LEVELS).expand(sizes.batch_size, len(LEVELS)).clone()
        with precision_context(device, precision) as amp:
            terms = bench.kd_step(mask, amp=amp)
        results[precision] = [
            StepResult("kd_step_all_levels", precision, 0.0, 0.0, kd_loss_values(terms))
        ]
    return [asdict(row) for row in compare_precisions(results["fp32"], results["bf16"])]


def _sweep_config(config: Config, out: Path, concurrent: bool, trial_cpus: float) -> Config:
    sweep = dataclasses.replace(
        config.sweep,
        seeds=[0],
        rl_lams=[],
        nas_methods=[],
        static_grid=False,
        baselines=list(SWEEP_TRIALS),
        trial_cpus=trial_cpus,
        trial_gpus=0.25,
        max_concurrent_trials=0 if concurrent else 1,
        scheduler="fifo",
    )
    runtime = dataclasses.replace(config.runtime, out=str(out), progress=False)
    return dataclasses.replace(config, sweep=sweep, runtime=runtime)


def _trial_span(sweep_dir: Path, outcome: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from the first trial's start to the last one's end (the trials' own clocks: Ray's
    start-up and the shared teacher left out), and where each trial ran."""
    starts, ends, placements = [], [], {}
    for trial_id in outcome["statuses"]:
        path = trial_dir(sweep_dir, trial_id) / "metrics.json"
        if not path.is_file():
            continue  # failed: listed under "errored"
        metrics = read_json(path)
        starts.append(metrics["trial_start_unix_s"])
        ends.append(metrics["trial_end_unix_s"])
        placements[trial_id] = {key: metrics[key] for key in ("gpu_ids", "device", "device_note")}
    if not starts:
        raise RuntimeError(f"no trial of the sweep in {sweep_dir} finished: see its report")
    return max(ends) - min(starts), placements


def sweep_sharing(config: Config, out: Path, cuda: bool, cpus: int) -> dict[str, Any]:
    """The four ``SWEEP_TRIALS`` as a sweep at 0.25 GPU each, all at once and then one at a time
    (``<out>/shared``, ``<out>/serial``); each one's trials per hour over the span of its trials'
    own clocks (first start to last end), its whole wall time and where each trial ran.

    Ray is started here with the machine's CPUs and, without CUDA, one logical GPU."""
    start_ray(num_cpus=cpus, num_gpus=None if cuda else 1, log_to_driver=False)
    trial_cpus = max(1.0, cpus // 4)
    result: dict[str, Any] = {"trials": list(SWEEP_TRIALS), "trial_cpus": trial_cpus}
    for mode, concurrent in (("shared", True), ("serial", False)):
        sweep_config = _sweep_config(config, out / mode, concurrent, trial_cpus)
        if mode == "serial" and not (out / mode / "teacher").exists():
            # the same teacher (its fingerprint holds): trained once, not once per mode
            shutil.copytree(teacher_path(out / "shared").parents[1], out / mode / "teacher")
        start = time.perf_counter()
        outcome = run_sweep(sweep_config, progress=False)
        wall_s = time.perf_counter() - start
        span_s, placements = _trial_span(Path(sweep_config.runtime.out), outcome)
        result[mode] = {
            "sweep_wall_s": wall_s,
            "trials_span_s": span_s,
            "trials_per_hour": len(SWEEP_TRIALS) * 3600 / span_s,
            "finished": outcome["finished"],
            "errored": [error["trial_id"] for error in outcome["errored"]],
            "placements": placements,
        }
    result["shared_over_serial"] = (
        result["shared"]["trials_per_hour"] / result["serial"]["trials_per_hour"]
    )
    return result


def device_facts(device: torch.device) -> dict[str, Any]:
    """Versions and the card, for the record."""
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.type == "cuda":
        facts |= {
            "gpu_name": torch.cuda.get_device_name(device),
            "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30,
            "cuda": torch.version.cuda,
        }
    return facts


def check_document(sizes: CheckSizes, parts: dict[str, Any]) -> dict[str, Any]:
    """The JSON the check writes: its sizes, parts, and the two goals with whether they are met."""
    speed = parts.get("kd_step_speed", {})
    sharing = parts.get("sweep_sharing", {})
    goals = {
        "kd_step_fraction_of_matmul_rate": {
            "goal": ">= 0.4",
            "measured": speed.get("ours_fraction_of_matmul_rate"),
        },
        "sweep_shared_over_serial": {"goal": ">= 2", "measured": sharing.get("shared_over_serial")},
    }
    for name, goal in goals.items():
        threshold = 0.4 if name.startswith("kd") else 2.0
        measured = goal["measured"]
        goal["met"] = None if measured is None else bool(measured >= threshold)
    return {"sizes": asdict(sizes), **parts, "goals": goals}
