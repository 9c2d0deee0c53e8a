"""Phase 2 over PPO seeds: on one decision bank, does PPO learn, and do its seeds agree?

The bank (and its held-out, validation and training contexts) is collected once from the config's
``runtime.seed``; PPO then runs once per seed on it (the bank env's stream and RLlib's seed). For
each seed: the selected iteration's held-out score, PPO's entropy, how per-sample its choices are,
its weights' digest and the verdict. Across seeds: the share of held-out contexts on which each
pair's greedy choices agree, beside the scores of the best static subset and the predictor.
Writes ``<out>/policy_seeds.{json,md}``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from envs.observation import observation_dim
from envs.snapshots import build_snapshot_pool
from experiments.policy_environment import (
    BEST_WEIGHTS_FILE,
    BestIteration,
    PolicyEnvironment,
    policy_environment,
)
from experiments.policy_learning import policy_fingerprint
from experiments.run_setup import open_run_with_teacher
from policies.ppo_setup import train_policy
from policies.ray_runtime import ensure_ray
from policies.weights import module_from_state, read_weights_file
from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config
from rlpkd.report.learning_verdict import MAX_ENTROPY, phase2_verdict
from rlpkd.rundir import RunDirectory, write_json

__all__ = ["run_policy_seeds", "policy_seeds_markdown"]


def _digest(state: dict[str, Any]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(state):
        hasher.update(name.encode())
        hasher.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    return hasher.hexdigest()[:16]


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(array)}


def run_policy_seeds(
    config: Config, seeds: list[int], teacher_checkpoint: Path | None = None
) -> dict[str, Any]:
    """PPO per seed on the config's decision bank (module docstring); returns the record.

    The teacher is trained into ``<out>`` unless ``teacher_checkpoint`` is given; the snapshot
    pool and the bank live in ``<out>/checkpoints/snapshots`` (reused by fingerprint).
    """
    progress = config.runtime.progress
    opened, teacher, teacher_checkpoint = open_run_with_teacher(config, teacher_checkpoint)
    datasets, run_dir = opened.datasets, opened.run_dir
    snapshot_dir = run_dir.checkpoints / "snapshots"
    build_snapshot_pool(config, datasets, teacher, snapshot_dir, progress)
    environment = policy_environment(config, datasets, teacher_checkpoint, snapshot_dir, progress)
    references = environment.scorer.references()
    obs_dim = observation_dim(datasets.num_classes)
    ensure_ray()
    runs, choices = [], {}
    for seed in seeds:
        print(f"[policy seeds] PPO seed {seed}", flush=True)
        run, choices[seed] = _seed_run(config, run_dir, environment, references, obs_dim, seed)
        runs.append(run)
        write_json(run_dir.path / "policy_seeds.json", {"references": references, "runs": runs})
    agreement = {
        f"{a}-{b}": float((choices[a] == choices[b]).mean())
        for a, b in itertools.combinations(seeds, 2)
    }
    ceiling = max(references["static_score"], references["predictor_score"])
    summary = {
        key: _mean_std([run[key] for run in runs])
        for key in ("heldout_score", "entropy", "heldout_share_off_most_common", "learning_time_s")
    }
    record = {
        "references": references,
        "runs": runs,
        "summary": summary,
        "agreement": agreement,
        "min_agreement": min(agreement.values()) if agreement else math.nan,
        "goals": {
            "score_at_least_ceiling_minus_0.05": all(
                run["heldout_score"] >= ceiling - 0.05 for run in runs
            ),
            "entropy_at_most_0.8_ln16": all(run["entropy"] <= 0.8 * MAX_ENTROPY for run in runs),
        },
    }
    write_json(run_dir.path / "policy_seeds.json", record)
    atomic_write_text(run_dir.path / "policy_seeds.md", policy_seeds_markdown(record))
    return record


def _seed_run(
    config: Config,
    run_dir: RunDirectory,
    environment: PolicyEnvironment,
    references: dict[str, Any],
    obs_dim: int,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """PPO with ``seed`` on the bank (its iteration chosen on the validation contexts); its
    record and its greedy choices on the held-out contexts."""
    rl = config.rl
    folder = run_dir.checkpoints / f"ppo-seed{seed}"
    keep = BestIteration(
        folder / BEST_WEIGHTS_FILE, f"{policy_fingerprint(config)}:{seed}", obs_dim, config
    )
    algo, history = train_policy(
        config,
        {**environment.env_config, "seed": seed},
        rl.iterations,
        folder,
        progress=config.runtime.progress,
        env_name=environment.env_name,
        evaluate=environment.evaluator(config, obs_dim, keep),
    )
    algo.stop()
    state = read_weights_file(keep.path).state
    module = module_from_state(state, obs_dim, rl.hidden_sizes, rl.policy_head)
    chosen = history[keep.iteration - 1]
    verdict = phase2_verdict(chosen, references)
    run = {
        "seed": seed,
        "selected_iteration": keep.iteration,
        "weights_digest": _digest(state),
        "learning_time_s": sum(h.get("time_s", 0.0) for h in history),
        "entropy": verdict["entropy"],
        "verdict": verdict["status"],
        **{k: v for k, v in chosen.items() if k.startswith(("heldout_", "validation_"))},
    }
    return run, environment.scorer.greedy_choices(module)


def policy_seeds_markdown(record: dict[str, Any]) -> str:
    """The seeds' record as a short Markdown report."""
    references = record["references"]
    lines = [
        "# Phase 2 over PPO seeds, one decision bank",
        "",
        f"Held-out contexts: {references['heldout_contexts']} from "
        f"{references['heldout_images']} images. Normalised score (random 0, oracle 1) of the "
        f"best static subset ({references['static_subset']}) {references['static_score']:.3f}, "
        f"of the predictor ({references['predictor_kind']}) {references['predictor_score']:.3f}.",
        "",
        "| PPO seed | selected iteration | held-out score | entropy | share off its most common "
        "subset | most common | verdict | weights digest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in record["runs"]:
        lines.append(
            f"| {run['seed']} | {run['selected_iteration']} | {run['heldout_score']:.3f} | "
            f"{run['entropy']:.3f} | {run['heldout_share_off_most_common']:.3f} | "
            f"{run['heldout_most_common_subset']} | {run['verdict']} | {run['weights_digest']} |"
        )
    summary = record["summary"]
    lines += [
        "",
        f"Mean over seeds: score {summary['heldout_score']['mean']:.3f} ± "
        f"{summary['heldout_score']['std']:.3f}, entropy {summary['entropy']['mean']:.3f} ± "
        f"{summary['entropy']['std']:.3f} (ln 16 = {MAX_ENTROPY:.3f}).",
        "Greedy choices that agree on held-out contexts, per pair of seeds: "
        + ", ".join(f"{pair} {100 * share:.1f}%" for pair, share in record["agreement"].items())
        + ".",
        f"Goals: score ≥ max(static, predictor) − 0.05 on every seed: "
        f"{record['goals']['score_at_least_ceiling_minus_0.05']}; entropy ≤ 0.8 · ln 16 on every "
        f"seed: {record['goals']['entropy_at_most_0.8_ln16']}.",
    ]
    return "\n".join(lines) + "\n"
