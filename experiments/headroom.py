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

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from envs.snapshots import build_snapshot_pool, check_snapshot_files
from experiments.headroom_students import (
    best_subsets_by_regime,
    compare_methods,
    method_comparison,
    oracle_plan,
    static_subset_runs,
)
from experiments.headroom_values import (
    regime_order,
    snapshot_value_matrices,
    value_analysis,
    valued_batches,
)
from experiments.run_setup import open_run
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.synthetic import image_regimes
from rlpkd.errors import ConfigError
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.evaluation.regime_ap import evaluate_by_regime, regime_image_ids
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import LEVELS, all_subsets, parse_levels
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.headroom import BEST_STATIC, ORACLE, render_headroom_markdown
from rlpkd.rundir import RunDirectory, read_json, write_json
from rlpkd.training.student_phase import StudentRunInputs
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


def _train_regimes_and_val_ids(
    datasets: DetectionDatasets,
) -> tuple[dict[int, str], dict[str, list[int]]]:
    """Each training image's regime, and the val image ids of each regime in ``regime_order``.

    Raises:
        DataError: the annotation files record no image regimes (the data is not embedded).
    """
    train_regimes = image_regimes(datasets.train.annotation_file)
    val_regimes = image_regimes(datasets.val.annotation_file)
    regime_ids = regime_image_ids(val_regimes, datasets.val.image_ids)
    regimes = regime_order(list(regime_ids))
    return train_regimes, {regime: regime_ids[regime] for regime in regimes}


def _teacher_and_scores(
    config: Config,
    options: HeadroomOptions,
    datasets: DetectionDatasets,
    device: torch.device,
    run_dir: RunDirectory,
    regime_ids: dict[str, list[int]],
) -> tuple[PyramidDetector, dict[str, Any]]:
    """The teacher (given, reused or trained) and its report entry: val AP overall and per
    regime, and its training time."""
    teacher, teacher_metrics = _load_teacher(config, options, datasets, device, run_dir)
    teacher_eval, teacher_predictions = evaluate_detector(
        teacher, datasets.val, config.eval, device, config.runtime.amp, config.runtime.progress
    )
    teacher_by_regime = evaluate_by_regime(datasets.val.coco, teacher_predictions, regime_ids)
    return teacher, {
        "AP": teacher_eval["AP"],
        "AP_by_regime": {r: m["AP"] for r, m in teacher_by_regime.items()},
        "train_time_s": teacher_metrics.get("train_time_s"),
    }


def _report_config(
    config: Config, options: HeadroomOptions, datasets: DetectionDatasets, heldout_size: int
) -> dict[str, Any]:
    """The report's ``config`` entry: the data and settings its numbers were measured with."""
    return {
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
        "heldout_size": heldout_size,
        "holdout_fraction": config.search.holdout_fraction,
        "teacher_path": str(options.teacher_path) if options.teacher_path else None,
    }


def _best_static_entry(best_static_run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's ``best_static_at_oracle_flops`` entry (None when no subset is that cheap)."""
    if best_static_run is None:
        return None
    return {
        "levels": best_static_run["levels"],
        "AP_seed0": best_static_run["AP"],
        "kd_gflops_model": best_static_run["kd_gflops_model"],
    }


def _write_report(report: dict[str, Any], run_dir: RunDirectory) -> None:
    """Draw the plots (listed in ``report["plots"]``), then write ``headroom.json`` and
    ``headroom.md`` into ``run_dir``."""
    out = run_dir.path
    plot_paths = [
        plot_regime_level_values(report["values"], LEVELS, run_dir.plots / "headroom.png"),
        plot_headroom_methods(
            report["static_subsets"], report["methods"], run_dir.plots / "headroom_methods.png"
        ),
    ]
    report["plots"] = [str(path.relative_to(out)) for path in plot_paths]
    write_json(out / "headroom.json", report)
    atomic_write_text(
        out / "headroom.md", render_headroom_markdown(read_json(out / "headroom.json"))
    )


def run_headroom(config: Config, options: HeadroomOptions) -> dict[str, Any]:
    """Measure the headroom into ``config.runtime.out`` (see module doc); returns the report.

    Raises:
        ConfigError, DataError, CheckpointError: bad options, data without image regimes, a
            truncated checkpoint — all before anything is written.
    """
    start = time.perf_counter()
    progress = config.runtime.progress
    check_headroom_inputs(config, options)
    opened = open_run(config, progress)
    device, datasets = opened.device, opened.datasets
    train_regimes, regime_ids = _train_regimes_and_val_ids(datasets)  # DataError if not embedded
    regimes = list(regime_ids)
    batches, heldout = valued_batches(  # fails before any write
        config, datasets, options.value_batches, options.heldout_size
    )
    out = Path(config.runtime.out)
    run_dir = RunDirectory(out)
    run_dir.prepare(config)
    timings: dict[str, float] = {}

    print(f"[headroom 1] teacher ({options.teacher_path or run_dir.checkpoints / 'teacher.pt'})")
    phase = time.perf_counter()
    teacher, teacher_entry = _teacher_and_scores(
        config, options, datasets, device, run_dir, regime_ids
    )
    timings["teacher_s"] = time.perf_counter() - phase

    print(f"[headroom 2] value matrices at snapshots {list(config.rl.snapshot_fractions)}")
    phase = time.perf_counter()
    snapshot_paths = build_snapshot_pool(config, datasets, teacher, _snapshot_dir(config), progress)
    timings["snapshot_pool_s"] = time.perf_counter() - phase
    phase = time.perf_counter()
    matrices = snapshot_value_matrices(
        config, datasets, teacher, snapshot_paths, batches, heldout, device
    )
    values = value_analysis(matrices, train_regimes)
    timings["value_matrices_s"] = time.perf_counter() - phase

    print(f"[headroom 3] {len(options.subsets)} static subsets, seed 0")
    phase = time.perf_counter()
    flops = flops_model_from_config(config, datasets.num_classes)
    inputs = StudentRunInputs(config, datasets, teacher, flops, device)
    static_runs = static_subset_runs(inputs, options.subsets, out, regime_ids)
    best_by_regime = best_subsets_by_regime(static_runs, flops, regimes)
    timings["static_students_s"] = time.perf_counter() - phase

    print("[headroom 4] oracle against the best static subset, all levels and the scale rule")
    phase = time.perf_counter()
    plan = oracle_plan(config, static_runs, best_by_regime, train_regimes, flops, regimes)
    methods = compare_methods(inputs, plan, out, regime_ids, regimes)
    timings["comparison_students_s"] = time.perf_counter() - phase
    comparison = method_comparison(methods, plan.best_static_run is not None)

    timings["total_s"] = time.perf_counter() - start
    report = {
        "config": _report_config(config, options, datasets, len(heldout)),
        "regimes": regimes,
        "val_images_by_regime": {r: len(regime_ids[r]) for r in regimes},
        "train_images_by_regime": {
            r: sum(1 for v in train_regimes.values() if v == r) for r in regimes
        },
        "teacher": teacher_entry,
        "kd_gflops_by_subset": flops.table(),
        "values": values,
        "static_subsets": static_runs,
        "best_subset_by_regime": best_by_regime,
        "oracle_kd_gflops_model": plan.kd_gflops,
        "best_static_at_oracle_flops": _best_static_entry(plan.best_static_run),
        "methods": methods,
        "comparison": comparison,
        "wall_time_s": timings,
    }
    _write_report(report, run_dir)
    return report
