"""MAML-style warm start of the level policy by Reptile (Nichol, Achiam & Schulman, 2018).

Reptile is first-order meta-learning: sample a task τ, adapt from the meta-weights θ with a few
steps of the ordinary learner (here: PPO iterations on τ's env) to get θ_τ, then move θ toward
the adapted weights, θ ← θ + ε (θ_τ − θ). No second derivatives; the meta-weights end up close to
every task's solution, so PPO on a new task of the same distribution adapts in fewer iterations.

Tasks here are (embedded-data regime, λ, student depth) triples (DESIGN §6); ``make_env_config``
turns a task into the env's ``env_config``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from tqdm.auto import tqdm

from envs.registration import ENV_NAME
from policies.level_policy_module import SHARED_MODULE_ID
from policies.ppo_setup import build_algorithm, iteration_summary
from policies.weights import ModuleState, load_module_weights, module_state, save_weights_file
from rlpkd.config import Config, MetaConfig, config_from_dict, config_to_dict

__all__ = [
    "MetaTask",
    "TaskCurve",
    "MetaResult",
    "task_distribution",
    "task_config",
    "task_env_config",
    "reptile_update",
    "meta_train",
    "adaptation_curve",
    "iterations_to_fraction",
]


@dataclass(frozen=True)
class MetaTask:
    """One task of the meta-training distribution."""

    regime: str
    """Embedded-dataset object-scale regime: 'small', 'large' or 'mixed'."""
    lam: float
    """λ of the reward's FLOPs penalty."""
    student_depth: int
    """Student ResNet depth."""

    @property
    def name(self) -> str:
        """Short label, e.g. ``small/lam0.5/r18``."""
        return f"{self.regime}/lam{self.lam:g}/r{self.student_depth}"


@dataclass
class TaskCurve:
    """The inner-loop learning curve of one outer iteration."""

    task: MetaTask
    """The sampled task."""
    episode_return: list[float]
    """Mean episode return after each inner PPO iteration."""
    reward_per_decision: list[float]
    """Mean per-sample reward after each inner PPO iteration."""


@dataclass
class MetaResult:
    """What ``meta_train`` produced."""

    meta_state: ModuleState
    """The meta-learnt weights θ."""
    init_state: ModuleState
    """The random initial weights θ₀ (for comparisons)."""
    curves: list[TaskCurve] = field(default_factory=list)
    """One adaptation curve per outer iteration, in order."""
    checkpoint: Path | None = None
    """The module-weights file holding ``meta_state``."""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account of the run (tasks and curves, no weights)."""
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "curves": [
                {
                    "task": asdict(curve.task),
                    "name": curve.task.name,
                    "episode_return": curve.episode_return,
                    "reward_per_decision": curve.reward_per_decision,
                }
                for curve in self.curves
            ],
        }


def task_distribution(meta: MetaConfig) -> list[MetaTask]:
    """All (regime, λ, student depth) combinations of ``meta``."""
    return [
        MetaTask(regime, float(lam), int(depth))
        for regime, lam, depth in itertools.product(meta.regimes, meta.lambdas, meta.student_depths)
    ]


def task_config(config: Config, task: MetaTask) -> Config:
    """``config`` with the task's data regime (embedded data only), λ and student depth."""
    values = config_to_dict(config)
    if config.data.source == "embedded":
        values["data"]["regime"] = task.regime
    values["student"]["depth"] = task.student_depth
    values["rl"]["lam"] = task.lam
    return config_from_dict(values, f"meta task {task.name}")


def task_env_config(
    config: Config, task: MetaTask, teacher_checkpoint: Path, snapshot_dir: Path, seed: int
) -> dict[str, Any]:
    """The level-selection env's ``env_config`` for ``task`` (see ``envs.level_selection_env``).

    Every task shares ``teacher_checkpoint`` (the run's Phase-1 teacher); the snapshot pool of
    each (regime, depth) lands in ``snapshot_dir`` under its own fingerprint.
    """
    return {
        "config": config_to_dict(task_config(config, task)),
        "teacher_checkpoint": str(teacher_checkpoint),
        "snapshot_dir": str(snapshot_dir),
        "seed": int(seed),
        "lam": float(task.lam),
    }


def reptile_update(
    theta: Mapping[str, torch.Tensor], theta_task: Mapping[str, torch.Tensor], meta_lr: float
) -> ModuleState:
    """Reptile's outer step θ + ε (θ_task − θ) on every parameter (ε = ``meta_lr``)."""
    return {
        name: value + meta_lr * (theta_task[name].to(value.dtype) - value)
        for name, value in theta.items()
    }


def _obs_dim(algo: Algorithm) -> int:
    module = algo.get_module(SHARED_MODULE_ID)
    return int(np.prod(module.observation_space.shape))


def _train_curve(algo: Algorithm, iterations: int) -> tuple[list[float], list[float]]:
    returns, rewards = [], []
    for _ in range(iterations):
        summary = iteration_summary(algo.train())
        returns.append(summary["episode_return_mean"])
        rewards.append(summary.get("level_selection/reward_per_decision", float("nan")))
    return returns, rewards


def meta_train(
    config: Config,
    make_env_config: Callable[[MetaTask], dict[str, Any]],
    tasks: Sequence[MetaTask],
    iterations: int,
    inner_iterations: int,
    meta_lr: float,
    out_path: Path,
    progress: bool = True,
    env_name: str = ENV_NAME,
    seed: int = 0,
) -> MetaResult:
    """Reptile over ``tasks``: ``iterations`` outer steps of one uniformly sampled task each.

    Each inner loop builds a fresh PPO algorithm (fresh optimiser) on the task's env, loads θ
    (learner and env runners), runs ``inner_iterations`` PPO iterations and moves θ toward the
    result by ``meta_lr``. The inner loop of outer step k uses env seed ``seed + k``. θ is saved to
    ``out_path`` as a module-weights file (``policies.weights.read_weights_file``).
    """
    if not tasks:
        raise ValueError("meta_train needs at least one task")
    rng = np.random.default_rng(seed)
    theta: ModuleState | None = None
    init_state: ModuleState | None = None
    obs_dim = 0
    curves: list[TaskCurve] = []
    bar = tqdm(total=iterations, desc="Reptile", disable=not progress)
    try:
        for step in range(iterations):
            task = tasks[int(rng.integers(len(tasks)))]
            env_config = {**make_env_config(task), "seed": seed + step}
            algo = build_algorithm(config, env_config, env_name)
            try:
                if theta is None:
                    theta = module_state(algo)
                    init_state = {k: v.clone() for k, v in theta.items()}
                    obs_dim = _obs_dim(algo)
                else:
                    load_module_weights(algo, theta)
                returns, rewards = _train_curve(algo, inner_iterations)
                theta_task = module_state(algo)
            finally:
                algo.stop()
            theta = reptile_update(theta, theta_task, meta_lr)
            curves.append(TaskCurve(task, returns, rewards))
            bar.update(1)
            bar.set_postfix(task=task.name, ret=f"{returns[-1]:.3g}" if returns else "-")
    finally:
        bar.close()
    if theta is None or init_state is None:
        raise ValueError("meta_train needs iterations >= 1")
    result = MetaResult(meta_state=theta, init_state=init_state, curves=curves)
    result.checkpoint = save_weights_file(
        Path(out_path),
        theta,
        obs_dim,
        config.rl.hidden_sizes,
        policy_head=config.rl.policy_head,
        metadata={
            "method": "reptile",
            "meta_iterations": iterations,
            "inner_iterations": inner_iterations,
            "meta_lr": meta_lr,
            "tasks": [task.name for task in tasks],
            "sampled_tasks": [curve.task.name for curve in curves],
        },
    )
    return result


def adaptation_curve(
    config: Config,
    env_config: dict[str, Any],
    init_state: Mapping[str, torch.Tensor] | None,
    iterations: int,
    env_name: str = ENV_NAME,
) -> list[float]:
    """Mean episode return after each of ``iterations`` PPO iterations from ``init_state``.

    ``init_state=None`` starts from the module's random init (scratch); pass the meta-weights for
    the warm-start curve. Same env_config and seed for both makes the two curves comparable.
    """
    algo = build_algorithm(config, env_config, env_name)
    try:
        if init_state is not None:
            load_module_weights(algo, init_state)
        returns, _ = _train_curve(algo, iterations)
    finally:
        algo.stop()
    return returns


def iterations_to_fraction(
    curve: Sequence[float],
    fraction: float = 0.9,
    target: float | None = None,
    baseline: float | None = None,
) -> int | None:
    """PPO iterations (1-based) until ``curve`` first reaches ``fraction`` of its way to ``target``.

    The threshold is ``baseline + fraction * (target - baseline)`` (works for negative rewards);
    ``target`` defaults to the curve's last value and ``baseline`` to its first. To compare
    warm start and scratch on one scale, pass the scratch curve's first and last values as
    ``baseline`` and ``target`` for both. NaNs (no finished episode yet) never count as reached.
    Returns None when the threshold is never reached.
    """
    values = [float(v) for v in curve]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    target = finite[-1] if target is None else float(target)
    baseline = finite[0] if baseline is None else float(baseline)
    threshold = baseline + fraction * (target - baseline)
    rising = target >= baseline
    for index, value in enumerate(values, start=1):
        if math.isfinite(value) and (value >= threshold if rising else value <= threshold):
            return index
    return None
