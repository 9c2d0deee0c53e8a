"""A search method end to end: search on the training split, retrain the pick on the full
schedule (like every other method), evaluate on val, write the run directory."""

from __future__ import annotations

import time
from typing import Any

from experiments.run_setup import open_run, prepare_run, student_inputs
from rlpkd.config import Config
from rlpkd.data.build import heldout_split
from rlpkd.rundir import RunDirectory, write_json
from rlpkd.search.context import SearchContext
from rlpkd.search.methods import run_search
from rlpkd.training.level_selection import FixedLevels
from rlpkd.training.student_phase import StudentRunInputs, run_student

__all__ = ["search_and_retrain", "run_search_experiment"]


def search_and_retrain(
    inputs: StudentRunInputs, method: str, seed: int, run_dir: RunDirectory
) -> dict[str, Any]:
    """Run search ``method`` on a held-out split of the training set, write ``search.json``,
    retrain the chosen subset on ``student_schedule`` and return its metrics plus the search cost.
    """
    config = inputs.config
    split = heldout_split(inputs.datasets, config.search.holdout_fraction, seed)
    context = SearchContext(
        config, split, inputs.teacher, inputs.flops, inputs.device, seed, config.runtime.progress
    )
    print(
        f"[search] {method} seed={seed}: {len(split.train)} search-train / {len(split.val)} "
        "held-out training images",
        flush=True,
    )
    result = run_search(method, context)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    write_json(run_dir.path / "search.json", result.to_dict())
    cost = result.cost
    print(
        f"[search] {method} picked {result.levels_name} in {cost.wall_time_s:.0f} "
        f"{cost.device}-seconds, {cost.kd_gflops:.1f} kd GFLOPs; retraining it",
        flush=True,
    )
    metrics = run_student(inputs, FixedLevels(result.levels), seed, run_dir)
    metrics |= {
        "method": method,
        "levels": result.levels_name,
        "search_wall_time_s": cost.wall_time_s,
        "search_kd_gflops": cost.kd_gflops,
        "search_student_images": cost.student_images,
        "search_evaluations": cost.evaluations,
        "search_device": cost.device,
        "search_lam": config.search.lam,
    }
    run_dir.write_metrics(metrics)
    return metrics


def run_search_experiment(config: Config, method: str, seed: int | None = None) -> dict[str, Any]:
    """``scripts/search_nas.py``: data, the teacher (trained once into ``<out>``), the search and
    the retrained pick, all in the run directory ``config.runtime.out``."""
    start = time.perf_counter()
    seed = config.runtime.seed if seed is None else seed
    opened = open_run(config)  # validates the data before anything is written
    run_dir = opened.run_dir
    teacher, _ = prepare_run(config, opened)
    inputs = student_inputs(config, opened, teacher)
    metrics = search_and_retrain(inputs, method, seed, run_dir)
    metrics["wall_time_s"] = time.perf_counter() - start
    run_dir.write_metrics(metrics)
    return metrics
