"""Does the Reptile warm start speed up PPO? Warm vs scratch curves per seed (Phase 2 only).

For each seed, PPO learns the level policy twice on the same env and seed: from the meta-policy
(``meta.warm_start``, written by ``scripts/meta_train.py``; Nichol et al., "On First-Order
Meta-Learning Algorithms", 2018) and from a random init. Each curve is the mean episode return per
iteration; the gain is the number of iterations each needs to reach 90% of the way from the
scratch curve's first to its last return (``policies.reptile.iterations_to_fraction``, the same
scale for both), as in the run report of ``train_rl`` with ``meta.compare_scratch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.policy_learning import learn_variant_policy
from experiments.run_setup import open_run_with_teacher
from policies.reptile import iterations_to_fraction
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config, config_from_dict, config_to_dict
from rlpkd.errors import ConfigError
from rlpkd.rundir import RunDirectory, write_json

__all__ = ["FRACTION", "run_warm_start_gain", "warm_start_gain_markdown", "curve_gain"]

FRACTION = 0.9
"""The share of the scratch curve's rise that counts as learnt."""


def _variant(config: Config, seed: int, warm_start: Path, out: Path) -> Config:
    values = config_to_dict(config)
    values["runtime"]["seed"] = seed
    values["runtime"]["out"] = str(out)
    values["meta"]["warm_start"] = str(warm_start)
    values["meta"]["compare_scratch"] = True
    return config_from_dict(values, f"warm-start variant seed={seed}")


def curve_gain(warm: list[float], scratch: list[float]) -> dict[str, Any]:
    """Iterations each curve needs to reach ``FRACTION`` of the scratch curve's rise (None:
    never), plus both curves' first and last returns."""
    finite = [v for v in scratch if np.isfinite(v)]
    baseline = finite[0] if finite else None
    target = finite[-1] if finite else None
    return {
        "warm_iterations": iterations_to_fraction(warm, FRACTION, target, baseline),
        "scratch_iterations": iterations_to_fraction(scratch, FRACTION, target, baseline),
        "warm_first_return": float(warm[0]) if warm else float("nan"),
        "scratch_first_return": float(scratch[0]) if scratch else float("nan"),
        "warm_last_return": float(warm[-1]) if warm else float("nan"),
        "scratch_last_return": float(scratch[-1]) if scratch else float("nan"),
    }


def _mean_std(values: list[float | None]) -> dict[str, float]:
    finite = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def run_warm_start_gain(
    config: Config,
    warm_start: Path,
    seeds: list[int],
    teacher_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Warm vs scratch PPO per seed into ``<out>/seed<seed>``; writes ``<out>/warm_start_gain.json``
    and ``.md`` and returns the record (curves, iterations to 90% per seed, mean ± std).

    Raises:
        ConfigError: no seeds.
    """
    if not seeds:
        raise ConfigError("the warm-start measurement needs at least one seed")
    opened, teacher, teacher_checkpoint = open_run_with_teacher(config, teacher_checkpoint)
    datasets, run_dir = opened.datasets, opened.run_dir
    snapshot_dir = run_dir.checkpoints / "snapshots"
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        variant_dir = RunDirectory(run_dir.path / f"seed{seed}")
        variant = _variant(config, seed, Path(warm_start), variant_dir.path)
        print(f"[warm start] seed={seed}: PPO warm-started, then from scratch", flush=True)
        learning = learn_variant_policy(
            variant, variant_dir, datasets, teacher, teacher_checkpoint, snapshot_dir
        )
        warm = [float(h.get("episode_return_mean", float("nan"))) for h in learning["history"]]
        scratch = [float(v) for v in learning["scratch_curve"]]
        gain = curve_gain(warm, scratch)
        print(
            f"[warm start] seed={seed}: {FRACTION:.0%} of the scratch rise after "
            f"{gain['warm_iterations']} (warm) vs {gain['scratch_iterations']} (scratch) iterations",
            flush=True,
        )
        runs.append({"seed": seed, "warm_curve": warm, "scratch_curve": scratch, **gain})
        write_json(run_dir.path / "warm_start_gain.json", {"runs": runs})
    record = {
        "warm_start": str(warm_start),
        "fraction": FRACTION,
        "iterations": config.rl.iterations,
        "runs": runs,
        "summary": {
            key: _mean_std([run[key] for run in runs])
            for key in ("warm_iterations", "scratch_iterations")
        },
    }
    write_json(run_dir.path / "warm_start_gain.json", record)
    atomic_write_text(run_dir.path / "warm_start_gain.md", warm_start_gain_markdown(record))
    return record


def warm_start_gain_markdown(record: dict[str, Any]) -> str:
    """The measurement as a short markdown report."""

    def shown(value: int | None) -> str:
        return "never" if value is None else str(value)

    summary = record["summary"]
    lines = [
        "# Reptile warm start vs scratch (PPO, Phase 2 only)",
        "",
        f"Iterations (of {record['iterations']}) to {record['fraction']:.0%} of the way from the "
        "scratch curve's first to its last mean episode return; meta-policy "
        f"`{record['warm_start']}`.",
        "",
        "| | warm start | scratch |",
        "|---|---|---|",
        "| mean ± std (seeds that reached it) | "
        f"{summary['warm_iterations']['mean']:.1f} ± {summary['warm_iterations']['std']:.1f} "
        f"(n={summary['warm_iterations']['n']}) | "
        f"{summary['scratch_iterations']['mean']:.1f} ± "
        f"{summary['scratch_iterations']['std']:.1f} (n={summary['scratch_iterations']['n']}) |",
        "",
        "| seed | warm | scratch | first return warm / scratch | last return warm / scratch |",
        "|---|---|---|---|---|",
    ]
    for run in record["runs"]:
        lines.append(
            f"| {run['seed']} | {shown(run['warm_iterations'])} | "
            f"{shown(run['scratch_iterations'])} | "
            f"{run['warm_first_return']:.3g} / {run['scratch_first_return']:.3g} | "
            f"{run['warm_last_return']:.3g} / {run['scratch_last_return']:.3g} |"
        )
    return "\n".join(lines) + "\n"
