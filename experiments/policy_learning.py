"""Phase 2 of ``train_rl``: learn the level policy and measure whether it learnt (DESIGN §5-6).

In order:

1. the snapshot pool (``envs.snapshots``): the stages of an all-level run episodes start from;
2. the decision bank (``envs.decision_bank``): the live env, driven with random subsets, keeps
   each decision's context and the values of all four levels; split by image into held-out
   (they only measure), validation (they choose PPO's iteration) and training contexts;
3. the yardsticks on the held-out contexts (``policies.heldout_score``): random, oracle, the best
   static subset, a supervised predictor of the values from the observation;
4. PPO through RLlib (``policies.ppo_setup.train_policy``): on the bank (``rl.learner: bank``, the
   exact reward of whichever subset is chosen) or on the live env (``live``), the value unit fixed
   from the bank either way; after every iteration the policy's held-out and validation scores;
5. the weights of the best validation iteration (``BestIteration``), the learning record and its
   verdict (``rlpkd.report.learning_verdict``).

Steps 1-3 and the iteration keeper live in ``experiments.policy_environment``; this module runs
PPO in that environment (with a budget's dual variable) and writes the record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envs.observation import observation_dim
from envs.snapshots import build_snapshot_pool
from experiments.policy_environment import (
    BEST_WEIGHTS_FILE,
    BestIteration,
    PolicyEnvironment,
    policy_environment,
    print_references,
)
from policies.budget_dual import PIDLagrangian
from policies.heldout_score import subset_name
from policies.learning_log import POLICY_LEARNING_FILE, PolicyLearningLog, policy_scalars
from policies.ppo_checkpoints import latest_checkpoint
from policies.ppo_setup import train_policy
from policies.ray_runtime import ensure_ray
from policies.reptile import adaptation_curve
from policies.weights import (
    module_state,
    read_weights_file,
    save_weights_file,
)
from rlpkd.config import Config
from rlpkd.data.build import DetectionDatasets
from rlpkd.fingerprint import file_digest, fingerprint
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.budget_comparison import phase2_budget_sentence
from rlpkd.report.learning_verdict import phase2_verdict
from rlpkd.rundir import RunDirectory, write_json
from rlpkd.viz.policy_learning import policy_learning_plot

__all__ = [
    "policy_fingerprint",
    "learn_policy",
    "learn_variant_policy",
    "budget_dual",
]


def policy_fingerprint(config: Config) -> str:
    """A hash of everything that determines the PPO policy of Phase 2.

    The data, both models and schedules, the KD objective (the env distils the snapshot
    students with it), the rl section (less Phase 3's ``greedy``, ``static_baselines`` and
    ``budget_pace``), the warm start's bytes and the seed; not where the data lives or how
    progress is shown.
    """
    return fingerprint(
        config,
        ("data", "teacher", "student", "teacher_schedule", "student_schedule", "distill", "rl"),
        {"warm_start": file_digest(config.meta.warm_start), "seed": config.runtime.seed},
        drop={"rl": ("greedy", "static_baselines", "budget_pace")},
    )


def learn_policy(
    config: Config,
    run_dir: RunDirectory,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    resume: bool,
    teacher_checkpoint: Path | None = None,
    snapshot_dir: Path | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Phase 2 (module docstring); saves the policy's weights and returns the learning record.

    The PPO checkpoint (``<out>/checkpoints/policy``) and ``policy_weights.pt`` record
    ``policy_fingerprint(config)``; with ``resume`` PPO continues only a checkpoint with the
    same fingerprint, otherwise it starts over.

    Every iteration's return, learner statistics (policy and value loss, entropy, KL), selection
    rates, held-out score and the live env's value signal go to TensorBoard
    (``<out>/tensorboard/policy``, tags ``policy/...``) and ``<out>/policy_learning.json``
    (``PolicyLearningLog``); at the end the record gets the yardsticks, the bank's facts and the
    verdict, and the learning curves are drawn to ``<out>/plots/policy_learning.png``.

    Args:
        teacher_checkpoint: the frozen teacher the env loads (default ``<out>/checkpoints/teacher.pt``).
        snapshot_dir: where the snapshot pool and decision banks live (default
            ``<out>/checkpoints/snapshots``; a sweep shares one between its RL trials).
        on_iteration: called with each PPO iteration's summary (e.g. to report it to Ray Tune).
    """
    progress = config.runtime.progress
    snapshot_dir = snapshot_dir or run_dir.checkpoints / "snapshots"
    teacher_checkpoint = teacher_checkpoint or run_dir.checkpoints / "teacher.pt"
    build_snapshot_pool(config, datasets, teacher, snapshot_dir, progress)
    environment = policy_environment(config, datasets, teacher_checkpoint, snapshot_dir, progress)
    references = environment.scorer.references()
    print_references(references)
    warm_start = Path(config.meta.warm_start) if config.meta.warm_start else None
    obs_dim = observation_dim(datasets.num_classes)
    start = time.perf_counter()
    history, state, selected = _train_with_early_stopping(
        config, run_dir, environment, obs_dim, resume, warm_start, on_iteration
    )
    weights_path = save_weights_file(
        run_dir.checkpoints / "policy_weights.pt",
        state,
        obs_dim=obs_dim,
        hidden_sizes=config.rl.hidden_sizes,
        policy_head=config.rl.policy_head,
        metadata={
            "iterations": len(history),
            "selected_iteration": selected,
            "warm_start": str(warm_start or ""),
            "policy_fingerprint": policy_fingerprint(config),
            "learner": config.rl.learner,
        },
    )
    budget = _budget_record(config, environment, history, selected)
    if budget:  # the yardsticks at the λ the selected iteration was trained with
        references = environment.scorer.with_lam(budget["selected_lam"]).references()
    record = _learning_record(config, environment, references, history, selected, start)
    record |= {"weights": str(weights_path), "warm_start": str(warm_start or "")}
    if budget:
        record["budget"] = budget
        print(phase2_budget_sentence(budget), flush=True)
    if warm_start is not None and config.meta.compare_scratch:
        record["scratch_curve"] = adaptation_curve(
            config, environment.env_config, None, config.rl.iterations, environment.env_name
        )
    write_json(run_dir.path / POLICY_LEARNING_FILE, record)
    policy_learning_plot(
        [policy_scalars(summary) for summary in history], run_dir.plots / "policy_learning.png"
    )
    print(record["verdict"]["sentence"], flush=True)
    return record


def learn_variant_policy(
    variant: Config,
    variant_dir: RunDirectory,
    datasets: DetectionDatasets,
    teacher: PyramidDetector,
    teacher_checkpoint: Path,
    snapshot_dir: Path,
) -> dict[str, Any]:
    """One variant of a multi-run experiment: its ``config.yaml`` into ``variant_dir``, then a
    fresh ``learn_policy`` (no resume) there with the experiment's teacher and snapshot pool."""
    variant_dir.prepare(variant)
    return learn_policy(
        variant,
        variant_dir,
        datasets,
        teacher,
        resume=False,
        teacher_checkpoint=teacher_checkpoint,
        snapshot_dir=snapshot_dir,
    )


def budget_dual(
    config: Config, run_dir: RunDirectory, resume: bool, policy_print: str
) -> PIDLagrangian | None:
    """With ``rl.budget``: the PID controller of λ, as the PPO checkpoint a resume continues left
    it (a fresh one starting at ``rl.lam`` otherwise); None without a budget."""
    rl = config.rl
    if rl.budget is None:
        return None
    latest = latest_checkpoint(run_dir.checkpoints / "policy") if resume else None
    if latest is None or latest[1]["fingerprint"] != policy_print or not latest[1]["history"]:
        return PIDLagrangian(rl.budget, rl.lam)
    return PIDLagrangian.from_state(rl.budget, rl.lam, latest[1]["history"][-1])


def _train_with_early_stopping(
    config: Config,
    run_dir: RunDirectory,
    environment: PolicyEnvironment,
    obs_dim: int,
    resume: bool,
    warm_start: Path | None,
    on_iteration: Callable[[dict[str, Any]], None] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """PPO (step 4), recorded after every iteration; returns the history, the weights of the
    iteration ``BestIteration`` selected and its number (the last one when none was scored)."""
    ensure_ray()
    policy_print = policy_fingerprint(config)
    learning_log = PolicyLearningLog(
        run_dir.path / POLICY_LEARNING_FILE, run_dir.tensorboard / "policy"
    )
    keep = BestIteration(
        run_dir.checkpoints / "policy" / BEST_WEIGHTS_FILE, policy_print, obs_dim, config
    )
    dual = budget_dual(config, run_dir, resume, policy_print)
    env_config = dict(environment.env_config)
    if dual is not None:
        env_config["lam"] = dual.lam  # where a resumed run's controller left it

    def on_history(history: list[dict[str, Any]]) -> None:
        if keep.iteration == 0:  # the first call carries what a resume restored
            keep.restore(history)
        learning_log(history)

    try:
        algo, history = train_policy(
            config,
            env_config,
            config.rl.iterations,
            run_dir.checkpoints / "policy",
            warm_start=warm_start,
            resume=resume,
            progress=config.runtime.progress,
            env_name=environment.env_name,
            on_iteration=on_iteration,
            fingerprint=policy_print,
            on_history=on_history,
            evaluate=environment.evaluator(config, obs_dim, keep, dual),
        )
    finally:
        learning_log.close()
    try:
        final = module_state(algo)
    finally:
        algo.stop()
    if keep.iteration == 0:
        return history, final, len(history)
    return history, read_weights_file(keep.path).state, keep.iteration


def _budget_record(
    config: Config, environment: PolicyEnvironment, history: list[dict[str, Any]], selected: int
) -> dict[str, Any]:
    """With ``rl.budget``: the budget, and the expected cost and λ of the selected and the last
    iteration; {} without a budget or history."""
    if config.rl.budget is None or not history:
        return {}
    chosen = history[selected - 1] if 0 < selected <= len(history) else history[-1]
    record: dict[str, Any] = {}
    if environment.budget_scorers is not None:
        heldout = environment.budget_scorers["heldout"]
        per_context = environment.budget_scorers["heldout_per_context"]
        record = {
            "heldout_budget_score": float(chosen.get("heldout_budget_score", math.nan)),
            "heldout_budget_per_context_score": float(
                chosen.get("heldout_budget_per_context_score", math.nan)
            ),
            "static_mix_budget_score": heldout.static_mix_score(),
            "static_mix_budget_per_context_score": per_context.static_mix_score(),
            "static_pair": [subset_name(i) for i in heldout.static_pair],
            "random_value": heldout.random_value,
            "value_greedy_value": heldout.oracle_value,
        }
    return record | {
        "budget": config.rl.budget,
        "selected_cost": float(chosen.get("budget_cost", math.nan)),
        "selected_lam": float(chosen.get("budget_lam", config.rl.lam)),
        "final_cost": float(history[-1].get("budget_cost", math.nan)),
        "final_lam": float(history[-1].get("budget_next_lam", math.nan)),
    }


def _learning_record(
    config: Config,
    environment: PolicyEnvironment,
    references: dict[str, Any],
    history: list[dict[str, Any]],
    selected: int,
    start: float,
) -> dict[str, Any]:
    """What Phase 2 learnt and what it cost: history, yardsticks, bank, decisions per value
    GFLOP, the selected iteration's numbers and the verdict on them."""
    last = history[-1] if history else {}
    chosen = history[selected - 1] if 0 < selected <= len(history) else last
    learning_time = sum(h.get("time_s", 0.0) for h in history) or time.perf_counter() - start
    bank = environment.bank_record()
    # the env counts every decision it served since it was made (this process's iterations)
    decisions = float(
        last.get("level_selection_env/decisions", config.rl.train_batch_size * len(history))
    )
    if config.rl.learner == "bank":
        signal_gflops = bank["value_gflops"]
        signal_per_decision = signal_gflops / decisions if decisions else float("nan")
    else:
        signal_per_decision = last.get(
            "level_selection_env/reward_signal_gflops_per_decision", float("nan")
        )
    return {
        "learner": config.rl.learner,
        "reward": config.rl.reward,
        "history": history,
        "learning_time_s": learning_time,
        "ppo_decisions": decisions,
        "reward_signal_gflops_per_decision": signal_per_decision,
        "decisions_per_value_gflop": 1.0 / signal_per_decision
        if signal_per_decision and signal_per_decision > 0
        else float("nan"),
        "decision_bank": bank,
        "heldout": references,
        "selected_iteration": selected,
        "selected": {
            k: v for k, v in chosen.items() if k.startswith(("heldout_", "validation_", "learner/"))
        },
        "verdict": phase2_verdict(chosen, references),
    }
