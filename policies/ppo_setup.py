"""PPO on the level-selection decision process through RLlib (new API stack).

Every agent slot of the env (one sample of the distillation batch each) maps to one shared
LevelSelectionModule; PPO counts agent steps, so ``rl.train_batch_size`` is the number of per-sample
decisions per iteration. ``train_policy`` is the Phase-2 loop: build, optionally warm-start, optionally
resume from the last algorithm checkpoint, then train with a checkpoint after every iteration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
)
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY, Learner
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, LEARNER_RESULTS
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from tqdm.auto import tqdm

from envs.bank_bandit_env import BANK_EPISODE_STEPS, BANK_SLOTS
from envs.registration import BANK_ENV_NAME, ENV_NAME, register_envs
from policies.learner_gpus import check_learner_gpus
from policies.level_policy_module import SHARED_MODULE_ID, LevelSelectionModule
from policies.ppo_checkpoints import (
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    start_over_hint,
)
from policies.ray_runtime import ensure_ray
from policies.weights import load_module_weights, read_weights_file
from rlpkd.config import Config
from rlpkd.errors import CheckpointError, divergence_in
from rlpkd.levels import LEVELS, subsets_to_masks

__all__ = [
    "SELECTION_METRICS",
    "ENV_METRICS",
    "LEARNER_METRICS",
    "LEARNER_STATISTICS",
    "map_to_shared_module",
    "level_module_spec",
    "build_ppo_config",
    "log_selection_metrics",
    "SelectionMetricsCallback",
    "build_algorithm",
    "collect_env_metrics",
    "set_env_lam",
    "iteration_summary",
    "train_policy",
]

SELECTION_METRICS = "level_selection"
"""RLlib metrics namespace of the per-decision statistics (``env_runners/level_selection/...``)."""
ENV_METRICS = "level_selection_env"
"""RLlib metrics namespace of the env's own ``metrics()`` at episode ends."""
LEARNER_METRICS = "learner"
"""Prefix of PPO's learner statistics in an iteration summary (``learner/policy_loss`` ...)."""
LEARNER_STATISTICS: tuple[str, ...] = (
    POLICY_LOSS_KEY,
    VF_LOSS_KEY,
    ENTROPY_KEY,
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    Learner.TOTAL_LOSS_KEY,
)
"""RLlib's names of the PPO learner statistics kept per iteration (``learners/<module>/<name>``
of ``algo.train()``): surrogate policy loss, value-function loss, entropy, mean KL to the sampling
policy, the critic's explained variance, total loss."""


def map_to_shared_module(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping: every sample slot acts with the one shared module."""
    return SHARED_MODULE_ID


def level_module_spec(config: Config) -> MultiRLModuleSpec:
    """A MultiRLModuleSpec holding the one shared LevelSelectionModule (spaces come from the env)."""
    return MultiRLModuleSpec(
        rl_module_specs={
            SHARED_MODULE_ID: RLModuleSpec(
                module_class=LevelSelectionModule,
                model_config={
                    "hidden_sizes": list(config.rl.hidden_sizes),
                    "policy_head": config.rl.policy_head,
                },
            )
        }
    )


def _episodes_per_iteration(config: Config, env_config: dict[str, Any], env_name: str) -> int:
    if env_name == BANK_ENV_NAME:
        slots = int(env_config.get("slots", BANK_SLOTS))
        steps = int(env_config.get("episode_steps", BANK_EPISODE_STEPS))
    else:
        slots, steps = config.rl.slots, config.rl.episode_steps
    decisions_per_episode = max(1, slots * steps)
    return max(1, math.ceil(config.rl.train_batch_size / decisions_per_episode))


def build_ppo_config(
    config: Config, env_config: dict[str, Any], env_name: str = ENV_NAME
) -> PPOConfig:
    """The PPOConfig of Phase 2: one shared module, resources and hyperparameters from ``config.rl``.

    Defaults sample and learn in the driver (``num_env_runners=0``, ``num_learners=0``), which
    is what fits on 2 CPUs; RLlib's own defaults ask for more CPUs than that and hang.
    """
    rl = config.rl
    learners = max(1, rl.num_learners)
    seed = int(env_config.get("seed", config.runtime.seed))
    return (
        PPOConfig()
        .framework("torch")
        .environment(env=env_name, env_config=dict(env_config), disable_env_checking=True)
        .env_runners(
            num_env_runners=rl.num_env_runners,
            num_envs_per_env_runner=1,
            num_cpus_per_env_runner=1,
            num_gpus_per_env_runner=0,
        )
        .learners(
            num_learners=rl.num_learners,
            num_gpus_per_learner=rl.num_gpus_per_learner,
        )
        .multi_agent(
            policies={SHARED_MODULE_ID},
            policy_mapping_fn=map_to_shared_module,
            count_steps_by="agent_steps",
        )
        .rl_module(rl_module_spec=level_module_spec(config))
        .training(
            train_batch_size_per_learner=max(1, rl.train_batch_size // learners),
            minibatch_size=rl.minibatch_size,
            num_epochs=rl.num_epochs,
            lr=rl.lr,
            gamma=rl.gamma,
            entropy_coeff=rl.entropy_coeff,
        )
        .callbacks(SelectionMetricsCallback)
        .reporting(
            metrics_num_episodes_for_smoothing=_episodes_per_iteration(config, env_config, env_name)
        )
        .debugging(seed=seed, log_level="ERROR")
    )


def _numeric_items(values: Any, prefix: str = "") -> dict[str, float]:
    """Flatten scalars of a (nested) dict/list into 'a/b'- or 'a_0'-named floats."""
    items: dict[str, float] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            items.update(_numeric_items(value, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(values, (list, tuple)) or (isinstance(values, np.ndarray) and values.ndim == 1):
        for index, value in enumerate(values):
            items.update(_numeric_items(value, f"{prefix}_{index}"))
    elif isinstance(values, (bool, int, float, np.number)) or (
        isinstance(values, np.ndarray) and values.ndim == 0
    ):
        value = float(values)
        if math.isfinite(value):
            items[prefix] = value
    return items


def _as_float(value: Any) -> float:
    """``value`` as a float (NaN when it is missing or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def log_selection_metrics(
    *, episode: Any, metrics_logger: MetricsLogger | None = None, **kwargs: Any
) -> None:
    """``on_episode_step``: log the decisions of the env step just taken.

    Logs, averaged over the step's sample slots (and then over the iteration):
    ``rate_P2..rate_P5`` (fraction of decisions choosing each level), ``levels_per_decision``,
    ``reward_per_decision`` and the mean of every numeric entry of the agents' info dicts (the
    env reports there e.g. each sample's KD gap and its KD FLOPs).
    """
    if metrics_logger is None:
        return
    actions = episode.get_actions(-1)
    if not actions:
        return
    rewards = episode.get_rewards(-1)
    infos = episode.get_infos(-1)
    masks = subsets_to_masks(torch.tensor([int(a) for a in actions.values()])).numpy()
    values: dict[str, float] = {
        f"rate_{level}": float(masks[:, i].mean()) for i, level in enumerate(LEVELS)
    }
    values["levels_per_decision"] = float(masks.sum(axis=1).mean())
    if rewards:
        values["reward_per_decision"] = float(np.mean([float(r) for r in rewards.values()]))
    per_key: dict[str, list[float]] = {}
    for agent_id in actions:
        for key, value in _numeric_items((infos or {}).get(agent_id, {})).items():
            per_key.setdefault(key, []).append(value)
    for key, samples in per_key.items():
        values.setdefault(key, float(np.mean(samples)))
    for key, value in values.items():
        metrics_logger.log_value((SELECTION_METRICS, key), value, reduce="mean")


class SelectionMetricsCallback(RLlibCallback):
    """RLlib callback: per-decision selection statistics and the env's ``metrics()``.

    Results appear under ``env_runners/level_selection/*`` (per decision, see
    ``log_selection_metrics``) and ``env_runners/level_selection_env/*`` (the numeric entries of
    the env's ``metrics()`` at the latest episode end: its cumulative counters, averaged over env
    runners).
    """

    def on_episode_step(self, **kwargs: Any) -> None:
        """Per-decision statistics of the step just taken."""
        log_selection_metrics(**kwargs)

    def on_episode_end(
        self,
        *,
        env: Any = None,
        env_index: int = 0,
        metrics_logger: MetricsLogger | None = None,
        **kwargs: Any,
    ) -> None:
        """The env's own ``metrics()`` (when it has one)."""
        if metrics_logger is None or env is None:
            return
        sub_envs = getattr(env, "envs", None)
        single = (sub_envs[env_index] if sub_envs else env).unwrapped
        metrics = getattr(single, "metrics", None)
        if not callable(metrics):
            return
        # the env's counters are cumulative, so its latest value is the one to report
        for key, value in _numeric_items(metrics()).items():
            metrics_logger.log_value((ENV_METRICS, key), value, reduce="mean", window=1)


def _register_env(env_name: str) -> None:
    if env_name in (ENV_NAME, BANK_ENV_NAME):
        register_envs()


def build_algorithm(
    config: Config, env_config: dict[str, Any], env_name: str = ENV_NAME
) -> Algorithm:
    """A PPO Algorithm built from ``build_ppo_config`` (starts Ray and registers the env if needed).

    Raises:
        ConfigError: ``rl.num_gpus_per_learner`` > 0 where the learner sees no CUDA device, one
            line before RLlib starts anything (``policies.learner_gpus``: RLlib has no CPU
            fallback for it).
    """
    ensure_ray()
    check_learner_gpus(config)
    _register_env(env_name)
    return build_ppo_config(config, env_config, env_name).build_algo()


def collect_env_metrics(algo: Algorithm) -> list[dict[str, float]]:
    """Each sampling env's own ``metrics()`` now (e.g. the total extra cost of learning)."""

    def _metrics(env_runner: Any) -> list[dict[str, float]]:
        vector_env = getattr(env_runner, "env", None)
        if vector_env is None:
            return []
        found = []
        for sub_env in getattr(vector_env, "envs", [vector_env]):
            metrics = getattr(sub_env.unwrapped, "metrics", None)
            if callable(metrics):
                found.append(_numeric_items(metrics()))
        return found

    per_runner = algo.env_runner_group.foreach_env_runner(_metrics, local_env_runner=True)
    return [metrics for runner in per_runner for metrics in runner]


def set_env_lam(algo: Algorithm, lam: float) -> int:
    """Set the FLOPs price of every sampling env that has ``set_lam`` (the bank env); returns how
    many envs took it."""

    def _set(env_runner: Any) -> int:
        vector_env = getattr(env_runner, "env", None)
        if vector_env is None:
            return 0
        count = 0
        for sub_env in getattr(vector_env, "envs", [vector_env]):
            setter = getattr(sub_env.unwrapped, "set_lam", None)
            if callable(setter):
                setter(lam)
                count += 1
        return count

    return sum(algo.env_runner_group.foreach_env_runner(_set, local_env_runner=True))


def iteration_summary(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one ``algo.train()`` result worth keeping (NaN where not measured yet).

    ``iteration``, ``episode_return_mean``, the shared module's ``learner/<name>`` for every name
    of ``LEARNER_STATISTICS`` (NaN when the learner reported none, kept as reported when not
    finite: a diverged loss shows), and every finite number under
    ``env_runners/level_selection/*`` and ``env_runners/level_selection_env/*``.
    """
    runners = result.get(ENV_RUNNER_RESULTS, {})
    summary = {
        "iteration": float(result.get("training_iteration", float("nan"))),
        "episode_return_mean": float(runners.get(EPISODE_RETURN_MEAN, float("nan"))),
    }
    learner = result.get(LEARNER_RESULTS, {}).get(SHARED_MODULE_ID, {})
    for name in LEARNER_STATISTICS:
        summary[f"{LEARNER_METRICS}/{name}"] = _as_float(learner.get(name))
    for namespace in (SELECTION_METRICS, ENV_METRICS):
        for key, value in _numeric_items(runners.get(namespace, {})).items():
            summary[f"{namespace}/{key}"] = value
    return summary


def train_policy(
    config: Config,
    env_config: dict[str, Any],
    iterations: int,
    checkpoint_dir: Path,
    warm_start: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    env_name: str = ENV_NAME,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    fingerprint: str = "",
    on_history: Callable[[list[dict[str, Any]]], None] | None = None,
    evaluate: Callable[[Algorithm], dict[str, Any]] | None = None,
) -> tuple[Algorithm, list[dict[str, Any]]]:
    """Phase 2: PPO for ``iterations`` iterations, checkpointing after each one.

    Args:
        config: The experiment (``config.rl`` holds PPO's settings).
        env_config: The env's ``env_config``.
        iterations: Total PPO iterations wanted (a resumed run only does the missing ones).
        checkpoint_dir: Where ``iteration_NNNN/`` (an RLlib algorithm checkpoint) and
            ``progress.json`` (iteration count and history) are kept.
        warm_start: Module-weights file (e.g. the Reptile meta-init) loaded before the first
            iteration; ignored when resuming from a checkpoint, which holds newer weights.
        resume: Continue from the latest checkpoint in ``checkpoint_dir`` if there is one.
        progress: Show a tqdm bar.
        env_name: Registered env name.
        on_iteration: Called with each new iteration's summary (e.g. a Ray Tune report).
        fingerprint: What the policy is trained from (``rl_pipeline.policy_fingerprint``),
            recorded with every checkpoint; a resume continues only a checkpoint with the same
            fingerprint and otherwise starts PPO over.
        on_history: Called with the whole history (iterations done before a resume included;
            ``[]`` when PPO starts over) once before the first new iteration and again after
            each one (e.g. ``policies.learning_log.PolicyLearningLog``).
        evaluate: Called with the algorithm after each iteration; what it returns joins the
            iteration's summary (e.g. the held-out score, ``policies.heldout_score``).

    Returns:
        The algorithm (the caller stops it) and the per-iteration history (``iteration_summary``
        plus ``time_s``), including iterations done before a resume.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    algo = build_algorithm(config, env_config, env_name)
    try:
        history = _prepare(algo, checkpoint_dir, warm_start, resume, fingerprint)
        if on_history is not None:
            on_history(list(history))
        _train_iterations(
            algo,
            iterations,
            checkpoint_dir,
            history,
            progress,
            on_iteration,
            fingerprint,
            on_history,
            evaluate,
        )
    except BaseException:
        algo.stop()
        raise
    return algo, history


def _prepare(
    algo: Algorithm,
    checkpoint_dir: Path,
    warm_start: Path | None,
    resume: bool,
    fingerprint: str = "",
) -> list[dict[str, Any]]:
    """Restore the latest checkpoint (resume, same fingerprint) or load the warm start; the
    history so far."""
    latest = latest_checkpoint(checkpoint_dir) if resume else None
    if latest is not None and latest[1]["fingerprint"] != fingerprint:
        print(
            f"the PPO checkpoint in {checkpoint_dir} was trained from other inputs; "
            "starting Phase 2 over",
            flush=True,
        )
        latest = None
    if latest is not None:
        path, saved = latest
        restore_checkpoint(algo, path, checkpoint_dir)
        if algo.iteration != saved["iteration"]:
            raise CheckpointError(
                f"checkpoint {path} restored iteration {algo.iteration}, progress.json says "
                f"{saved['iteration']}; {start_over_hint(checkpoint_dir)}"
            )
        return list(saved.get("history", []))
    if warm_start is not None:
        load_module_weights(algo, read_weights_file(Path(warm_start)).state)
    return []


def _train_iterations(
    algo: Algorithm,
    iterations: int,
    checkpoint_dir: Path,
    history: list[dict[str, Any]],
    progress: bool,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    fingerprint: str = "",
    on_history: Callable[[list[dict[str, Any]]], None] | None = None,
    evaluate: Callable[[Algorithm], dict[str, Any]] | None = None,
) -> None:
    """PPO iterations until ``algo.iteration == iterations``, a checkpoint after each."""
    bar = tqdm(
        total=iterations, initial=min(algo.iteration, iterations), desc="PPO", disable=not progress
    )
    try:
        while algo.iteration < iterations:
            start = time.perf_counter()
            try:
                result = algo.train()
            except Exception as error:  # RLlib/Ray wrap an env's DivergenceError: unwrap it
                diverged = divergence_in(error)
                if diverged is None:
                    raise
                raise diverged from None
            summary: dict[str, Any] = iteration_summary(result)
            summary["iteration"] = algo.iteration
            summary["time_s"] = time.perf_counter() - start
            if evaluate is not None:
                summary |= evaluate(algo)
            history.append(summary)
            save_checkpoint(algo, checkpoint_dir, history, fingerprint)
            if on_history is not None:
                on_history(list(history))
            if on_iteration is not None:
                on_iteration(summary)
            bar.update(1)
            postfix = {
                "ret": f"{summary['episode_return_mean']:.3g}",
                "levels": f"{summary.get(f'{SELECTION_METRICS}/levels_per_decision', float('nan')):.2f}",
            }
            if "heldout_score" in summary:
                postfix["score"] = f"{summary['heldout_score']:.3f}"
            bar.set_postfix(postfix)
    finally:
        bar.close()
