"""The student runs of the headroom report (``experiments.headroom``, phases 2 and 3).

Static subsets: one student per level subset, scored on the val images of each scale regime, and
the best subset of each regime. Oracle: a per-image selector giving each training image its
regime's best subset, compared over seeds with the best static subset at <= its kd GFLOPs, all
levels and the scale rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.errors import DataError
from rlpkd.evaluation.regime_ap import evaluate_by_regime
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import LEVELS, format_levels, parse_levels
from rlpkd.report.headroom import BEST_STATIC, ORACLE
from rlpkd.report.tables import mean_std
from rlpkd.rundir import RunDirectory
from rlpkd.training.level_selection import FixedLevels, LevelSelector, ScaleRuleLevels
from rlpkd.training.regime_table_selection import RegimeTableLevels
from rlpkd.training.student_phase import StudentRunInputs, run_or_reuse_student

__all__ = [
    "OraclePlan",
    "static_subset_runs",
    "best_subsets_by_regime",
    "oracle_plan",
    "compare_methods",
    "method_comparison",
]


def _run_name(name: str, seed: int) -> str:
    """The student directory name, as ``experiments.fixed_level_comparison`` names its runs."""
    return f"{name.replace(',', '+').replace(':', '-').replace(' ', '_')}-seed{seed}"


def _per_regime_ap(
    run_dir: RunDirectory, datasets: DetectionDatasets, regime_ids: dict[str, list[int]]
) -> dict[str, float]:
    """AP on each regime's val images, from the predictions a student run wrote."""
    predictions = json.loads((run_dir.path / "predictions.json").read_text())
    metrics = evaluate_by_regime(datasets.val.coco, predictions, regime_ids)
    return {regime: values["AP"] for regime, values in metrics.items()}


def _student(
    inputs: StudentRunInputs,
    selector: LevelSelector,
    method: str,
    seed: int,
    out: Path,
    regime_ids: dict[str, list[int]],
    title: str,
) -> dict[str, Any]:
    """One student run (reused when finished with the same fingerprint) and its per-regime AP."""
    run_dir = RunDirectory(out / "students" / _run_name(selector.name, seed))
    metrics = run_or_reuse_student(inputs, selector, seed, run_dir, title, method=method)
    return {
        "method": method,
        "levels": selector.name,
        "seed": seed,
        "AP": metrics["AP"],
        "AP_by_regime": _per_regime_ap(run_dir, inputs.datasets, regime_ids),
        "kd_gflops": metrics["kd_gflops"],
        "wall_time_s": metrics.get("wall_time_s"),
        "run_dir": str(run_dir.path),
    }


def best_subsets_by_regime(
    static_runs: list[dict[str, Any]], flops: FlopsModel, regimes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per regime: the static subset with the highest AP on that regime's val images (ties: the
    cheaper one)."""
    best = {}
    for regime in regimes:
        scored = [
            run for run in static_runs if math.isfinite(run["AP_by_regime"].get(regime, math.nan))
        ]
        if not scored:
            raise DataError(f"no static student has a finite AP on the {regime} val images")
        winner = max(
            scored,
            key=lambda run: (run["AP_by_regime"][regime], -flops.kd_gflops(run["subset"])),
        )
        best[regime] = {
            "levels": winner["levels"],
            "AP": winner["AP_by_regime"][regime],
            "kd_gflops": flops.kd_gflops(winner["subset"]),
        }
    return best


def _summarise(runs: list[dict[str, Any]], regimes: Sequence[str]) -> dict[str, Any]:
    """Mean ± std over seeds of AP, per-regime AP and measured kd GFLOPs of one method."""
    ap_mean, ap_std = mean_std([r["AP"] for r in runs])
    gflops_mean, gflops_std = mean_std([r["kd_gflops"] for r in runs])
    by_regime = {}
    for regime in regimes:
        mean, std = mean_std([r["AP_by_regime"].get(regime) for r in runs])
        by_regime[regime] = {"mean": mean, "std": std}
    return {
        "levels": runs[0]["levels"],
        "seeds": [r["seed"] for r in runs],
        "AP_mean": ap_mean,
        "AP_std": ap_std,
        "AP_by_regime": by_regime,
        "kd_gflops_mean": gflops_mean,
        "kd_gflops_std": gflops_std,
        "runs": runs,
    }


def _paired_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """AP(a) − AP(b) per shared seed, mean ± std."""
    by_seed = {run["seed"]: run["AP"] for run in b}
    differences = [run["AP"] - by_seed[run["seed"]] for run in a if run["seed"] in by_seed]
    mean, std = mean_std(differences)
    return {"mean": mean, "std": std, "per_seed": differences}


def static_subset_runs(
    inputs: StudentRunInputs,
    subsets: Sequence[tuple[str, ...]],
    out: Path,
    regime_ids: dict[str, list[int]],
) -> list[dict[str, Any]]:
    """One student per static level subset (the first seed of ``experiment.seeds``), each with
    its subset and modelled kd GFLOPs."""
    static_seed = inputs.config.experiment.seeds[0]
    static_runs = []
    for index, subset in enumerate(subsets):
        selector = FixedLevels(subset)
        title = f"[static {index + 1}/{len(subsets)}] levels={selector.name} seed={static_seed}"
        run = _student(inputs, selector, selector.name, static_seed, out, regime_ids, title)
        run["subset"] = list(subset)
        run["kd_gflops_model"] = inputs.flops.kd_gflops(subset)
        static_runs.append(run)
    return static_runs


@dataclass(frozen=True)
class OraclePlan:
    """The per-image oracle and the methods it is compared with."""

    table: dict[str, tuple[str, ...]]
    """Regime -> the level subset its training images distil (its best static subset)."""
    kd_gflops: float
    """The oracle's modelled kd GFLOPs per image over the training images."""
    best_static_run: dict[str, Any] | None
    """The best static run at <= ``kd_gflops``; None if no static subset is that cheap."""
    candidates: list[tuple[str, LevelSelector]]
    """(method, selector): the oracle, the best static subset, all levels and the scale rule."""


def oracle_plan(
    config: Config,
    static_runs: list[dict[str, Any]],
    best_by_regime: dict[str, dict[str, Any]],
    train_regimes: dict[int, str],
    flops: FlopsModel,
    regimes: Sequence[str],
) -> OraclePlan:
    """The oracle's table and cost, the best static subset it affords, and the compared methods.

    Raises:
        DataError: training images of a regime that has no val images to score on.
    """
    table = {regime: parse_levels(best_by_regime[regime]["levels"]) for regime in regimes}
    for regime in set(train_regimes.values()) - set(table):
        raise DataError(f"training images of regime {regime} have no val images to score on")
    oracle = RegimeTableLevels(table, train_regimes, name=ORACLE)
    oracle_gflops = oracle.mean_kd_gflops(flops)
    affordable = [r for r in static_runs if r["kd_gflops_model"] <= oracle_gflops + 1e-9]
    best_static_run = (
        max(affordable, key=lambda r: (r["AP"], -r["kd_gflops_model"])) if affordable else None
    )
    distinct = set(table.values())
    # one subset for every regime: the oracle is that static subset, whose runs are reused
    oracle_selector = FixedLevels(distinct.pop()) if len(distinct) == 1 else oracle
    candidates: list[tuple[str, LevelSelector]] = [(ORACLE, oracle_selector)]
    if best_static_run is not None:
        candidates.append((BEST_STATIC, FixedLevels(tuple(best_static_run["subset"]))))
    candidates += [
        ("all levels", FixedLevels(LEVELS)),
        ("scale rule", ScaleRuleLevels(config.data.level_thresholds)),
    ]
    return OraclePlan(table, oracle_gflops, best_static_run, candidates)


def compare_methods(
    inputs: StudentRunInputs,
    plan: OraclePlan,
    out: Path,
    regime_ids: dict[str, list[int]],
    regimes: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Each of the plan's methods over ``experiment.seeds``, summarised; the oracle's entry also
    gets its modelled kd GFLOPs and table."""
    seeds = inputs.config.experiment.seeds
    methods: dict[str, dict[str, Any]] = {}
    total = len(plan.candidates) * len(seeds)
    count = 0
    for method, selector in plan.candidates:
        runs = []
        for seed in seeds:
            count += 1
            title = f"[compare {count}/{total}] {method} ({selector.name}) seed={seed}"
            runs.append(_student(inputs, selector, method, seed, out, regime_ids, title))
        methods[method] = _summarise(runs, regimes)
    methods[ORACLE]["kd_gflops_model"] = plan.kd_gflops
    methods[ORACLE]["table"] = {r: format_levels(plan.table[r]) for r in regimes}
    methods[ORACLE]["levels"] = " / ".join(format_levels(plan.table[r]) for r in regimes)
    return methods


def method_comparison(
    methods: dict[str, dict[str, Any]], has_best_static: bool
) -> dict[str, dict[str, Any]]:
    """Paired AP differences over seeds: the oracle minus the best static subset (when there is
    one) and minus all levels, and the scale rule minus all levels."""
    comparison = {}
    if has_best_static:
        comparison["oracle_minus_best_static"] = _paired_difference(
            methods[ORACLE]["runs"], methods[BEST_STATIC]["runs"]
        )
    comparison["oracle_minus_all_levels"] = _paired_difference(
        methods[ORACLE]["runs"], methods["all levels"]["runs"]
    )
    comparison["scale_rule_minus_all_levels"] = _paired_difference(
        methods["scale rule"]["runs"], methods["all levels"]["runs"]
    )
    return comparison
