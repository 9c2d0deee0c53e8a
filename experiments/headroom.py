"""The headroom report: how much a per-sample level choice can gain on a config's data (issue 10).

Phases (``scripts/headroom.py``), each reusing what an earlier run left in ``<out>``:

1. **Value matrices.** At each student state of the snapshot pool (``envs.snapshots``,
   ``rl.snapshot_fractions``), the per-(sample, level) values ``v_il``
   (``rlpkd.distill.level_value``) of ``value_batches`` batches of training images from
   ``heldout_split(…).train``, against a held-out batch V from its ``.val`` part (never the val
   split). Their two-way ANOVA (``rlpkd.report.level_value_summary``) per snapshot and pooled.
2. **Static subsets.** One student (seed 0) per level subset, scored on the val images of each
   scale regime; the best subset of each regime.
3. **Oracle.** A per-image selector (``RegimeTableLevels``) giving each training image its regime's
   best subset, against the best static subset at ≤ its kd GFLOPs, all levels and the scale rule,
   over ``experiment.seeds``.

Writes ``headroom.json`` (every number), ``headroom.md`` and ``plots/headroom*.png``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.snapshots import build_snapshot_pool, check_snapshot_files, load_snapshot
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, build_datasets, heldout_split
from rlpkd.data.coco import build_dataloader, collate_detection
from rlpkd.data.synthetic import PER_IMAGE_CHOICES, image_regimes
from rlpkd.distill.level_value import level_values
from rlpkd.errors import ConfigError, DataError
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.evaluation.regime_ap import evaluate_by_regime, regime_image_ids
from rlpkd.flops.kd_flops import FlopsModel, flops_model_from_config
from rlpkd.levels import LEVELS, all_subsets, format_levels, parse_levels
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.headroom import BEST_STATIC, ORACLE, render_headroom_markdown
from rlpkd.report.interaction_anova import group_by_level_sum_of_squares
from rlpkd.report.level_value_summary import pool_value_matrices, summarise_value_matrix
from rlpkd.report.tables import mean_std
from rlpkd.rundir import RunDirectory, read_json, write_json
from rlpkd.runtime import configure_runtime
from rlpkd.training.level_selection import FixedLevels, LevelSelector, ScaleRuleLevels
from rlpkd.training.regime_table_selection import RegimeTableLevels
from rlpkd.training.student_phase import StudentRunInputs, run_or_reuse_student
from rlpkd.training.teacher_phase import (
    check_teacher_checkpoint,
    load_or_train_teacher,
    load_teacher,
)
from rlpkd.viz.headroom import plot_headroom_methods, plot_regime_level_values

__all__ = [
    "HeadroomOptions",
    "parse_subsets",
    "check_headroom_inputs",
    "run_headroom",
    "ORACLE",
    "BEST_STATIC",
]


@dataclass(frozen=True)
class HeadroomOptions:
    """What the headroom report measures, beyond the config."""

    value_batches: int = 8
    """Training batches (of ``student_schedule.batch_size``) valued at each snapshot."""
    heldout_size: int = 16
    """Images in the held-out batch V (from ``heldout_split(…).val``)."""
    subsets: tuple[tuple[str, ...], ...] = field(default_factory=lambda: tuple(all_subsets()))
    """The static level subsets trained (seed 0); default all 16."""
    teacher_path: Path | None = None
    """A trained teacher checkpoint; None: ``<out>/checkpoints/teacher.pt``, trained if missing."""


def parse_subsets(specs: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Level subsets from specs like ``none``, ``all``, ``P2,P4`` (duplicates dropped, index
    order kept as given).

    Raises:
        ConfigError: a spec that is not a level set.
    """
    subsets: list[tuple[str, ...]] = []
    for spec in specs:
        try:
            levels = parse_levels(spec)
        except ConfigError as error:
            raise ConfigError(f"--subsets: {error}") from None
        if levels not in subsets:
            subsets.append(levels)
    if not subsets:
        raise ConfigError("--subsets: give at least one level subset")
    return tuple(subsets)


def _snapshot_dir(config: Config) -> Path:
    return Path(config.runtime.out) / "checkpoints" / "snapshots"


def check_headroom_inputs(config: Config, options: HeadroomOptions) -> None:
    """Fail with one line before anything is written: options, the data's kind, and whatever an
    earlier run left in ``<out>`` (a truncated teacher or snapshot).

    Raises:
        ConfigError, CheckpointError: what is wrong and how to fix it.
    """
    if options.value_batches < 1:
        raise ConfigError(f"--value-batches {options.value_batches}: need at least 1 batch")
    if options.heldout_size < 1:
        raise ConfigError(f"--heldout-size {options.heldout_size}: need at least 1 image")
    if not options.subsets:
        raise ConfigError("--subsets: give at least one level subset")
    if config.data.source != "embedded":
        raise ConfigError(
            f"data.source is {config.data.source!r}: the headroom report needs the embedded "
            "data, whose annotation files record each image's scale regime"
        )
    if not config.experiment.seeds:
        raise ConfigError("experiment.seeds is empty: the oracle comparison needs seeds")
    if options.teacher_path is None:
        check_teacher_checkpoint(Path(config.runtime.out) / "checkpoints" / "teacher.pt")
    check_snapshot_files(config, _snapshot_dir(config))


def _run_name(name: str, seed: int) -> str:
    """The student directory name, as ``experiments.fixed_level_comparison`` names its runs."""
    return f"{name.replace(',', '+').replace(':', '-').replace(' ', '_')}-seed{seed}"


def _regime_order(regimes: Sequence[str]) -> list[str]:
    present = set(regimes)
    return [r for r in PER_IMAGE_CHOICES if r in present] + sorted(present - set(PER_IMAGE_CHOICES))


def _value_batches(
    config: Config, datasets: DetectionDatasets, options: HeadroomOptions
) -> tuple[list[DetectionBatch], DetectionBatch]:
    """The valued training batches (the first ``value_batches`` of a seeded shuffle of
    ``heldout_split(…).train``) and the held-out batch V (the first images of its ``.val``)."""
    seed = config.runtime.seed
    try:
        split = heldout_split(datasets, config.search.holdout_fraction, seed)
    except ValueError as error:
        raise ConfigError(f"search.holdout_fraction: {error}") from None
    batch_size = config.student_schedule.batch_size
    loader = build_dataloader(split.train, batch_size, shuffle=True, seed=seed, drop_last=True)
    if len(loader) < options.value_batches:
        raise ConfigError(
            f"--value-batches {options.value_batches}: the {len(split.train)} training images "
            f"outside the held-out part make only {len(loader)} batches of "
            f"student_schedule.batch_size={batch_size}"
        )
    heldout = collate_detection(
        [split.val[i] for i in range(min(options.heldout_size, len(split.val)))]
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the training view's flips
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == options.value_batches:
                break
    return batches, heldout


def _value_matrices(
    config: Config,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    snapshot_paths: Sequence[Path],
    batches: Sequence[DetectionBatch],
    heldout: DetectionBatch,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Per snapshot: its fraction, step and the [n, 4] values with each row's image id."""
    results = []
    heldout = heldout.to(device)
    bar = tqdm(
        total=len(snapshot_paths) * len(batches),
        desc="level values",
        disable=not config.runtime.progress,
    )
    for fraction, path in zip(config.rl.snapshot_fractions, snapshot_paths, strict=True):
        state = load_snapshot(path, config, datasets.num_classes, device)
        rows, ids, heldout_losses = [], [], []
        for batch in batches:
            values = level_values(
                state.student,
                teacher,
                state.objective,
                state.optimizer,
                batch.to(device),
                heldout,
            )
            rows.append(values.values.double().cpu().numpy())
            ids += batch.image_ids.tolist()
            heldout_losses.append(values.heldout_loss)
            bar.update(1)
        results.append(
            {
                "fraction": float(fraction),
                "step": state.step,
                "lr": float(state.optimizer.param_groups[0]["lr"]),
                "heldout_loss": heldout_losses[0],
                "values": np.concatenate(rows),
                "image_ids": ids,
            }
        )
    bar.close()
    return results


def _value_analysis(
    matrices: list[dict[str, Any]], train_regimes: dict[int, str]
) -> dict[str, Any]:
    """ANOVA summaries per snapshot and pooled (each snapshot divided by its std)."""
    per_snapshot = []
    all_regimes: list[str] = []
    for matrix in matrices:
        regimes = [train_regimes[i] for i in matrix["image_ids"]]
        all_regimes += regimes
        order = _regime_order(regimes)
        summary = summarise_value_matrix(matrix["values"], regimes, order)
        std = summary["std"]
        normalised_means = {
            regime: [m / std if std > 0 else m for m in entry["mean"]]
            for regime, entry in summary["by_regime"].items()
        }
        per_snapshot.append(
            {
                "fraction": matrix["fraction"],
                "step": matrix["step"],
                "lr": matrix["lr"],
                "heldout_loss": matrix["heldout_loss"],
                **summary,
                "normalised_mean_by_regime": normalised_means,
                "rows": [
                    {"image_id": int(i), "regime": r, "values": v.tolist()}
                    for i, r, v in zip(matrix["image_ids"], regimes, matrix["values"], strict=True)
                ],
            }
        )
    pooled_values = pool_value_matrices([m["values"] for m in matrices])
    pooled = summarise_value_matrix(pooled_values, all_regimes, _regime_order(all_regimes))
    # level preferences that change with the training stage also count as interaction when
    # pooled: their part, as the regime x level part is for regimes
    stages = [f"{m['fraction']:g}" for m in matrices for _ in m["image_ids"]]
    ss_stage = group_by_level_sum_of_squares(pooled_values, stages)
    total, interaction = pooled["anova"]["ss_total"], pooled["anova"]["ss_interaction"]
    pooled["snapshot_x_level"] = {
        "ss": ss_stage,
        "share_of_total": ss_stage / total if total > 0 else math.nan,
        "share_of_interaction": ss_stage / interaction if interaction > 0 else math.nan,
    }
    return {"snapshots": per_snapshot, "pooled": pooled}


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


def _best_subsets_by_regime(
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


def _load_teacher(
    config: Config,
    options: HeadroomOptions,
    datasets: DetectionDatasets,
    device: torch.device,
    run_dir: RunDirectory,
) -> tuple[PyramidDetector, dict[str, Any]]:
    if options.teacher_path is not None:
        teacher, metrics = load_teacher(options.teacher_path, config, datasets.num_classes)
        return teacher.to(device), metrics
    return load_or_train_teacher(config, datasets, device, run_dir, config.runtime.progress)


def run_headroom(config: Config, options: HeadroomOptions) -> dict[str, Any]:
    """Measure the headroom into ``config.runtime.out`` (see module doc); returns the report.

    Raises:
        ConfigError, DataError, CheckpointError: bad options, data without image regimes, a
            truncated checkpoint — all before anything is written.
    """
    start = time.perf_counter()
    progress = config.runtime.progress
    check_headroom_inputs(config, options)
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, progress)
    train_regimes = image_regimes(datasets.train.annotation_file)  # DataError if not embedded
    val_regimes = image_regimes(datasets.val.annotation_file)
    regime_ids = regime_image_ids(val_regimes, datasets.val.image_ids)
    regimes = _regime_order(list(regime_ids))
    regime_ids = {regime: regime_ids[regime] for regime in regimes}
    batches, heldout = _value_batches(config, datasets, options)  # fails before any write
    out = Path(config.runtime.out)
    run_dir = RunDirectory(out)
    run_dir.prepare(config)
    timings: dict[str, float] = {}

    print(f"[headroom 1] teacher ({options.teacher_path or run_dir.checkpoints / 'teacher.pt'})")
    phase = time.perf_counter()
    teacher, teacher_metrics = _load_teacher(config, options, datasets, device, run_dir)
    teacher_eval, teacher_predictions = evaluate_detector(
        teacher, datasets.val, config.eval, device, config.runtime.amp, progress
    )
    teacher_by_regime = evaluate_by_regime(datasets.val.coco, teacher_predictions, regime_ids)
    timings["teacher_s"] = time.perf_counter() - phase

    print(f"[headroom 2] value matrices at snapshots {list(config.rl.snapshot_fractions)}")
    phase = time.perf_counter()
    snapshot_paths = build_snapshot_pool(config, datasets, teacher, _snapshot_dir(config), progress)
    timings["snapshot_pool_s"] = time.perf_counter() - phase
    phase = time.perf_counter()
    matrices = _value_matrices(config, datasets, teacher, snapshot_paths, batches, heldout, device)
    values = _value_analysis(matrices, train_regimes)
    timings["value_matrices_s"] = time.perf_counter() - phase

    print(f"[headroom 3] {len(options.subsets)} static subsets, seed 0")
    phase = time.perf_counter()
    flops = flops_model_from_config(config, datasets.num_classes)
    inputs = StudentRunInputs(config, datasets, teacher, flops, device)
    static_seed = config.experiment.seeds[0]
    static_runs = []
    for index, subset in enumerate(options.subsets):
        selector = FixedLevels(subset)
        title = (
            f"[static {index + 1}/{len(options.subsets)}] levels={selector.name} seed={static_seed}"
        )
        run = _student(inputs, selector, selector.name, static_seed, out, regime_ids, title)
        run["subset"] = list(subset)
        run["kd_gflops_model"] = flops.kd_gflops(subset)
        static_runs.append(run)
    best_by_regime = _best_subsets_by_regime(static_runs, flops, regimes)
    timings["static_students_s"] = time.perf_counter() - phase

    print("[headroom 4] oracle against the best static subset, all levels and the scale rule")
    phase = time.perf_counter()
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
    methods: dict[str, dict[str, Any]] = {}
    total = len(candidates) * len(config.experiment.seeds)
    count = 0
    for method, selector in candidates:
        runs = []
        for seed in config.experiment.seeds:
            count += 1
            title = f"[compare {count}/{total}] {method} ({selector.name}) seed={seed}"
            runs.append(_student(inputs, selector, method, seed, out, regime_ids, title))
        methods[method] = _summarise(runs, regimes)
    methods[ORACLE]["kd_gflops_model"] = oracle_gflops
    methods[ORACLE]["table"] = {r: format_levels(table[r]) for r in regimes}
    methods[ORACLE]["levels"] = " / ".join(format_levels(table[r]) for r in regimes)
    timings["comparison_students_s"] = time.perf_counter() - phase
    comparison = {}
    if best_static_run is not None:
        comparison["oracle_minus_best_static"] = _paired_difference(
            methods[ORACLE]["runs"], methods[BEST_STATIC]["runs"]
        )
    comparison["oracle_minus_all_levels"] = _paired_difference(
        methods[ORACLE]["runs"], methods["all levels"]["runs"]
    )
    comparison["scale_rule_minus_all_levels"] = _paired_difference(
        methods["scale rule"]["runs"], methods["all levels"]["runs"]
    )

    timings["total_s"] = time.perf_counter() - start
    report = {
        "config": {
            "data_root": config.data.root,
            "data_regime": config.data.regime,
            "num_train": len(datasets.train),
            "num_val": len(datasets.val),
            "image_size": config.data.image_size,
            "student_epochs": config.student_schedule.epochs,
            "seeds": list(config.experiment.seeds),
            "snapshot_fractions": list(config.rl.snapshot_fractions),
            "value_batches": options.value_batches,
            "batch_size": config.student_schedule.batch_size,
            "heldout_size": len(heldout),
            "holdout_fraction": config.search.holdout_fraction,
            "teacher_path": str(options.teacher_path) if options.teacher_path else None,
        },
        "regimes": regimes,
        "val_images_by_regime": {r: len(regime_ids[r]) for r in regimes},
        "train_images_by_regime": {
            r: sum(1 for v in train_regimes.values() if v == r) for r in regimes
        },
        "teacher": {
            "AP": teacher_eval["AP"],
            "AP_by_regime": {r: m["AP"] for r, m in teacher_by_regime.items()},
            "train_time_s": teacher_metrics.get("train_time_s"),
        },
        "kd_gflops_by_subset": flops.table(),
        "values": values,
        "static_subsets": static_runs,
        "best_subset_by_regime": best_by_regime,
        "oracle_kd_gflops_model": oracle_gflops,
        "best_static_at_oracle_flops": (
            None
            if best_static_run is None
            else {
                "levels": best_static_run["levels"],
                "AP_seed0": best_static_run["AP"],
                "kd_gflops_model": best_static_run["kd_gflops_model"],
            }
        ),
        "methods": methods,
        "comparison": comparison,
        "wall_time_s": timings,
    }
    plot_paths = [
        plot_regime_level_values(values, LEVELS, run_dir.plots / "headroom.png"),
        plot_headroom_methods(static_runs, methods, run_dir.plots / "headroom_methods.png"),
    ]
    report["plots"] = [str(path.relative_to(out)) for path in plot_paths]
    write_json(out / "headroom.json", report)
    atomic_write_text(
        out / "headroom.md", render_headroom_markdown(read_json(out / "headroom.json"))
    )
    return report
