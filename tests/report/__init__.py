"""Report tests, and the synthetic sweep directories they share with the viz and script tests.

The synthetic sweep is hand-made test data for the report (``trials/<id>/metrics.json`` as the
sweep writes them), built so the expected answers can be read off by hand:

- kd GFLOPs of a static subset: 3 (teacher) + P2 4, P3 2, P4 1, P5 0.5 (none: 0; all: 10.5).
- AP: 0.20 + P2 0.03 + P3 0.04 + P4 0.02 - P5 0.005, with seed 0 at -0.002 and seed 1 at +0.002.
  P5 only costs, so every subset with P5 is dominated; P2 (7, .23) and P2,P4 (8, .25) are dominated
  by P3,P4 (6, .26). Best at λ=0: P2,P3,P4 (.29); at λ=0.084 (0.008 per GFLOP): P3,P4 (.212).
- NAS: darts and exhaustive pick P2,P3,P4 on both seeds; gdas picks P2 (seed 0), P2,P3,P4 (seed 1).
  Search seconds: darts 10/14, gdas 20/20, exhaustive 100/140; kd GFLOPs darts 50, exhaustive 1000.
- RL: λ=0.1 at 5.5 GFLOPs, AP .25 (front at <= 5.5: P3 .24, above by 1 point); λ=0.3 at 4.5,
  AP .21 (front: P4 .22, below by 1 point).
- Baseline: random:0.5 at 6 GFLOPs, AP .23.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlpkd.levels import all_subsets, format_levels

LEVEL_KD_GFLOPS = {"P2": 4.0, "P3": 2.0, "P4": 1.0, "P5": 0.5}
LEVEL_AP_GAIN = {"P2": 0.03, "P3": 0.04, "P4": 0.02, "P5": -0.005}
SEED_NOISE = {0: -0.002, 1: 0.002}
SEARCH_SECONDS = {"darts": (10.0, 14.0), "gdas": (20.0, 20.0), "exhaustive": (100.0, 140.0)}
SEARCH_KD_GFLOPS = {"darts": 50.0, "gdas": 80.0, "exhaustive": 1000.0}
NAS_PICKS = {
    "darts": ("P2,P3,P4", "P2,P3,P4"),
    "gdas": ("P2", "P2,P3,P4"),
    "exhaustive": ("P2,P3,P4", "P2,P3,P4"),
}


def subset_kd_gflops(levels: tuple[str, ...]) -> float:
    """Teacher + KD GFLOPs of a static subset in the synthetic sweep."""
    return 3.0 + sum(LEVEL_KD_GFLOPS[lv] for lv in levels) if levels else 0.0


def subset_ap(levels: tuple[str, ...]) -> float:
    """Mean AP of a static subset in the synthetic sweep."""
    return 0.20 + sum(LEVEL_AP_GAIN[lv] for lv in levels)


def write_trial(sweep: Path, trial_id: str, metrics: dict[str, Any]) -> Path:
    """``<sweep>/trials/<trial_id>/metrics.json``."""
    folder = sweep / "trials" / trial_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps({"trial_id": trial_id, **metrics}))
    return path


def _metrics(kind: str, method: str, levels: str, seed: int, ap: float, kd: float) -> dict:
    ap += SEED_NOISE[seed]
    return {
        "AP": ap,
        "AP50": ap + 0.2,
        "AP75": ap - 0.05,
        "APs": None,
        "APm": ap,
        "APl": ap + 0.1,
        "kd_gflops": kd,
        "student_train_gflops": 758.0,
        "wall_time_s": 60.0 + seed,
        "seed": seed,
        "kind": kind,
        "method": method,
        "levels": levels,
    }


def write_static_trials(sweep: Path, seeds=(0, 1), subsets=None) -> None:
    """The static grid (all 16 subsets unless ``subsets`` is given)."""
    for levels in subsets if subsets is not None else all_subsets():
        name = format_levels(levels)
        for seed in seeds:
            metrics = _metrics(
                "static", name, name, seed, subset_ap(levels), subset_kd_gflops(levels)
            )
            write_trial(sweep, f"static_{name.replace(',', '')}_s{seed}", metrics)


def write_nas_trials(sweep: Path, methods=("darts", "gdas", "exhaustive"), seeds=(0, 1)) -> None:
    """NAS trials: the retrained pick's metrics plus the search cost."""
    for method in methods:
        for seed in seeds:
            pick = NAS_PICKS[method][seed]
            levels = tuple(pick.split(","))
            metrics = _metrics(
                "nas", method, pick, seed, subset_ap(levels), subset_kd_gflops(levels)
            )
            metrics |= {
                "search_wall_time_s": SEARCH_SECONDS[method][seed],
                "search_kd_gflops": SEARCH_KD_GFLOPS[method],
                "search_student_images": 1000,
                "search_evaluations": 16 if method == "exhaustive" else 100,
                "search_device": "cpu",
            }
            write_trial(sweep, f"nas_{method}_s{seed}", metrics)


def write_rl_trials(sweep: Path, seeds=(0, 1)) -> None:
    """RL trials at λ=0.3 (4.5 GFLOPs, AP .21) and λ=0.1 (5.5 GFLOPs, AP .25)."""
    for lam, kd, ap in ((0.3, 4.5, 0.21), (0.1, 5.5, 0.25)):
        for seed in seeds:
            metrics = _metrics("rl", f"rl λ={lam:g}", "rl-policy", seed, ap, kd) | {"lam": lam}
            write_trial(sweep, f"rl_{lam:g}_s{seed}", metrics)


def write_baseline_trials(sweep: Path, seeds=(0, 1)) -> None:
    """The random:0.5 baseline (6 GFLOPs, AP .23)."""
    for seed in seeds:
        metrics = _metrics("baseline", "random:0.5", "random:0.5", seed, 0.23, 6.0)
        write_trial(sweep, f"baseline_random_s{seed}", metrics)


def make_sweep(root: Path, lam: float | None = None) -> Path:
    """A complete synthetic sweep (all kinds, seeds 0 and 1) plus one unfinished trial dir."""
    sweep = root / "sweep"
    write_static_trials(sweep)
    write_nas_trials(sweep)
    write_rl_trials(sweep)
    write_baseline_trials(sweep)
    (sweep / "trials" / "rl_1_s0").mkdir(parents=True)  # unfinished: no metrics.json
    if lam is not None:
        (sweep / "config.yaml").write_text(f"search:\n  lam: {lam}\n  population: 4\n")
    return sweep


def write_failed_trial(
    sweep: Path, trial_id: str, kind: str, method: str, seed: int, stale_ap: float | None = 0.0
) -> Path:
    """``<sweep>/trials/<trial_id>/failed.json`` as ``run_trial`` writes it for a diverged trial,
    beside a stale ``metrics.json`` with AP ``stale_ap`` (None: no metrics file), e.g. from an
    earlier run that reported the diverged student as AP 0.0."""
    folder = sweep / "trials" / trial_id
    folder.mkdir(parents=True, exist_ok=True)
    if stale_ap is not None:
        stale = _metrics(kind, method, method, seed, stale_ap, 1.0)
        write_trial(sweep, trial_id, stale | {"AP": stale_ap})
    error = (
        f"training diverged in student {method} seed {seed} at step 2: loss term 'detection' "
        "is nan (lower the learning rate or check the annotations)"
    )
    path = folder / "failed.json"
    path.write_text(
        json.dumps(
            {
                "error": error,
                "phase": f"student {method} seed {seed}",
                "step": 2,
                "term": "detection",
                "value": "nan",
                "trial_id": trial_id,
                "kind": kind,
                "method": method,
                "seed": seed,
            }
        )
    )
    return path
