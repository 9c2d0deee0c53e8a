"""The static front of a budget study: every fixed level subset, trained over the study's seeds.

A budget study compares the policy with its controls at one cost; the static subsets say what
the same FLOPs buy with no per-sample choice at all (issue 19: "AP against kd FLOPs for every
method: the static front, the policy at each budget, each control"). None of them depends on the
budget, so they train once, in the first budget's run directory (``students/static:<levels>-
seed<k>``; no KD and all levels are that run's ``none`` and ``all`` students), in Phase 3's
student workers, each reused when it already finished with its fingerprint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments.policy_students import distil_job
from experiments.student_workers import StudentJob, StudentWorkerPool
from rlpkd.config import Config
from rlpkd.errors import ConfigError
from rlpkd.levels import all_subsets, format_levels
from rlpkd.report.sweep_rows import static_front
from rlpkd.report.tables import summarise_methods
from rlpkd.training.level_selection import parse_level_spec

__all__ = [
    "STATIC_PREFIX",
    "ALL_STATIC_SPECS",
    "static_levels",
    "static_method",
    "static_front_jobs",
    "train_static_front",
    "static_front_record",
]

STATIC_PREFIX = "static:"
"""Method name prefix of a static subset's student (but ``none`` and ``all``, named as in every
run)."""

ALL_STATIC_SPECS: tuple[str, ...] = tuple(format_levels(levels) for levels in all_subsets())
"""The 16 level subsets as level specs: ``none``, ``P2``, ..., ``all``."""


def static_levels(spec: str) -> tuple[str, ...]:
    """The levels of a static subset's spec (``none``, ``all``, ``P3,P5``); a per-sample spec
    (``random:0.5``, ``scale-rule``) or a bad one is a ``ConfigError`` naming it."""
    kind, levels = parse_level_spec(spec)
    if kind != "fixed" or not isinstance(levels, tuple):
        raise ConfigError(f"static subset {spec!r}: give a fixed level set (none, all, P3,P5)")
    return levels


def static_method(spec: str) -> str:
    """The method name of a static subset's student: ``none`` / ``all`` / ``static:P3,P4``."""
    name = format_levels(static_levels(spec))  # one spelling per subset, whatever the order
    return name if name in ("none", "all") else f"{STATIC_PREFIX}{name}"


def static_front_jobs(specs: Sequence[str], seeds: Sequence[int]) -> list[StudentJob]:
    """One student job per (subset, seed), each subset once however the specs spell it, the
    subsets of more levels first (roughly the costlier first, so that the workers finish
    together). A spec that is not a fixed level set is a ``ConfigError`` (``static_levels``)."""
    subsets = {static_method(spec): static_levels(spec) for spec in specs}
    by_cost = sorted(subsets.items(), key=lambda item: -len(item[1]))
    return [
        StudentJob(method, format_levels(levels), seed)
        for method, levels in by_cost
        for seed in seeds
    ]


def train_static_front(
    config: Config, run: Path, specs: Sequence[str], weights: Path
) -> list[dict[str, Any]]:
    """Train (or reuse) every static subset of ``specs`` over ``config.experiment.seeds`` in the
    run directory ``run`` (which holds the teacher), in ``runtime.student_workers`` processes
    (at least one); returns their metrics, in ``static_front_jobs`` order. ``weights``: the
    run's policy weights file, which a static student does not read."""
    jobs = static_front_jobs(specs, config.experiment.seeds)
    if not jobs:
        return []
    runtime = dataclasses.replace(
        config.runtime, out=str(run), student_workers=max(1, config.runtime.student_workers)
    )
    config = dataclasses.replace(config, runtime=runtime)
    print(f"[static front] {len(jobs)} students in {run / 'students'}", flush=True)
    bar = tqdm(total=len(jobs), desc="static front", unit="student", disable=not runtime.progress)
    try:
        with StudentWorkerPool(config, distil_job, weights) as pool:
            futures = pool.submit(jobs)
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            return [future.result() for future in futures]
    finally:
        bar.close()


def static_front_record(runs: list[dict[str, Any]], all_levels_gflops: float) -> dict[str, Any]:
    """The static subsets' rows (mean and std over seeds, kd FLOPs as a fraction of all levels')
    and the Pareto front among them (``rlpkd.report.sweep_rows.static_front``)."""
    rows = summarise_methods(runs)
    for row in rows:
        row["kind"] = "static"
        row["kd_fraction_mean"] = row["kd_gflops_mean"] / all_levels_gflops
    rows.sort(key=lambda row: (row["kd_gflops_mean"], row["method"]))
    return {"rows": rows, "front": [point["method"] for point in static_front(rows)]}
