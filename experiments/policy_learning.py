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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm

from envs.bank_bandit_env import BANK_EPISODE_STEPS, BANK_SLOTS
from envs.decision_bank import (
    DecisionBank,
    collect_decision_bank,
    decision_bank_fingerprint,
    decision_bank_path,
    split_by_image,
)
from envs.level_selection_env import LevelSelectionEnv
from envs.observation import observation_dim
from envs.registration import BANK_ENV_NAME, ENV_NAME
from envs.snapshots import build_snapshot_pool
from policies.budget_dual import PIDLagrangian, expected_cost
from policies.budget_score import BudgetScorer, static_subsets_around
from policies.heldout_score import HeldOutScorer, greedy_choices, per_context_score, subset_name
from policies.learning_log import POLICY_LEARNING_FILE, PolicyLearningLog, policy_scalars
from policies.ppo_setup import ensure_ray, latest_checkpoint, set_env_lam, train_policy
from policies.reptile import adaptation_curve
from policies.weights import (
    module_from_state,
    module_state,
    read_weights_file,
    save_weights_file,
)
from rlpkd.config import Config, config_to_dict
from rlpkd.data.build import DetectionDatasets
from rlpkd.data.synthetic import image_regimes
from rlpkd.errors import DataError
from rlpkd.fingerprint import file_digest, fingerprint
from rlpkd.models.detector import PyramidDetector
from rlpkd.report.budget_comparison import phase2_budget_sentence
from rlpkd.report.learning_verdict import phase2_verdict
from rlpkd.rundir import RunDirectory, write_json
from rlpkd.viz.policy_learning import policy_learning_plot

__all__ = [
    "BEST_WEIGHTS_FILE",
    "VALIDATION_FRACTION",
    "BestIteration",
    "policy_fingerprint",
    "check_decision_bank",
    "image_regimes_of",
    "decision_bank_for",
    "PolicyEnvironment",
    "policy_environment",
    "learn_policy",
]


def policy_fingerprint(config: Config) -> str:
    """A hash of everything that determines the PPO policy of Phase 2.

    The data, both models and schedules, the KD objective (the env distils the snapshot
    students with it), the rl section (less Phase 3's ``greedy`` and ``static_baselines``), the
    warm start's bytes and the seed; not where the data lives or how progress is shown.
    """
    return fingerprint(
        config,
        ("data", "teacher", "student", "teacher_schedule", "student_schedule", "distill", "rl"),
        {"warm_start": file_digest(config.meta.warm_start), "seed": config.runtime.seed},
        drop={"rl": ("greedy", "static_baselines")},
    )


def image_regimes_of(datasets: DetectionDatasets) -> dict[int, str] | None:
    """Image id -> scale regime of the training images (embedded data only), else None."""
    try:
        return image_regimes(datasets.train.annotation_file)
    except DataError:
        return None


def decision_bank_for(
    config: Config, teacher_checkpoint: Path, snapshot_dir: Path, progress: bool = True
) -> tuple[DecisionBank, Path]:
    """The decision bank of ``config`` (``rl.bank_decisions`` contexts), collected from the live
    env with the value reward (whatever ``rl.reward`` is: the bank is the yardstick) and kept in
    ``snapshot_dir``, or read back from there when its fingerprint matches."""
    bank_fingerprint = decision_bank_fingerprint(config, teacher_checkpoint)
    path = decision_bank_path(snapshot_dir, bank_fingerprint)
    if path.is_file():
        print(f"decision bank: reusing {path}", flush=True)
        return DecisionBank.load(path), path
    env = LevelSelectionEnv(
        {
            "config": config_to_dict(config),
            "teacher_checkpoint": str(teacher_checkpoint),
            "snapshot_dir": str(snapshot_dir),
            "seed": config.runtime.seed,
            "reward": "value",
        }
    )
    bank = collect_decision_bank(env, config.rl.bank_decisions, config.runtime.seed, progress)
    bank.metadata["fingerprint"] = bank_fingerprint
    bank.save(path)
    return bank, path


BEST_WEIGHTS_FILE = "best_weights.pt"
"""In the PPO checkpoint folder: the weights of the iteration ``BestIteration`` selected."""
VALIDATION_FRACTION = 0.2
"""Share of the training contexts' images kept out of PPO to choose its iteration (early
stopping), so that the held-out contexts only ever measure."""


def check_decision_bank(config: Config, teacher_checkpoint: Path, snapshot_dir: Path) -> None:
    """Read the decision bank an earlier run left for ``config`` (if any), so that a truncated
    or foreign one stops the run before anything is written.

    Raises:
        CheckpointError: the bank file is unreadable or not a decision bank.
    """
    path = decision_bank_path(snapshot_dir, decision_bank_fingerprint(config, teacher_checkpoint))
    if path.is_file():
        DecisionBank.load(path)


class PolicyEnvironment:
    """What PPO learns from (env name and config), the held-out scorer that measures it and the
    validation contexts that choose its iteration."""

    def __init__(
        self,
        env_name: str,
        env_config: dict[str, Any],
        scorer: HeldOutScorer,
        validation: DecisionBank,
        bank: DecisionBank,
        bank_path: Path,
        value_unit: float,
        heldout_images: list[int],
        lam: float,
        training_images: np.ndarray | None = None,
        budget_scorers: dict[str, BudgetScorer] | None = None,
    ) -> None:
        self.env_name = env_name
        self.env_config = env_config
        self.scorer = scorer
        self.validation = validation
        self.validation_observations = validation.observations
        self.validation_table = validation.reward_table(lam, value_unit)
        trained = np.ones(len(bank), dtype=bool)
        if training_images is not None:
            trained = np.isin(bank.image_ids, training_images)
        self.training_observations = bank.observations[trained]
        self.subset_costs = bank.subset_costs
        self.budget_scorers = budget_scorers
        """With ``rl.budget``: ``BudgetScorer`` of the validation contexts (per context, to
        choose the iteration) and of the held-out ones (by mean value and per context)."""
        self.bank = bank
        self.bank_path = bank_path
        self.value_unit = value_unit
        self.heldout_images = heldout_images

    def evaluator(
        self,
        config: Config,
        obs_dim: int,
        keep: BestIteration | None = None,
        dual: PIDLagrangian | None = None,
    ) -> Callable[[Algorithm], dict[str, Any]]:
        """``train_policy``'s ``evaluate``: the trained weights' held-out numbers and their
        ``validation_score`` (per-context score on the validation contexts); ``keep`` is offered
        the weights of every iteration. With a budget's ``dual``: its expected cost on the
        training contexts moves λ for the next iteration (set in every sampling env); the
        held-out numbers are priced at the λ it was trained with, beside its budget scores
        (``policies.budget_score``: its allocation at exactly the budget, whatever λ was). With a
        budget no iteration is chosen early: Phase 2 keeps the last one, where λ has settled.
        On the default's bank the validation budget scores (by mean value and per context)
        disagreed with each other and with the held-out ones (docs/results.md, Budget)."""
        rl = config.rl

        def evaluate(algo: Algorithm) -> dict[str, Any]:
            state = module_state(algo)
            module = module_from_state(state, obs_dim, rl.hidden_sizes, rl.policy_head)
            scorer, table, result = self.scorer, self.validation_table, {}
            if dual is not None:
                cost = expected_cost(module, self.training_observations, self.subset_costs)
                result = {"budget_cost": cost, "budget_lam": dual.lam}
                scorer = scorer.with_lam(dual.lam)
                table = self.validation.reward_table(dual.lam, self.value_unit)
                dual.update(cost)
                set_env_lam(algo, dual.lam)
                result |= dual.state()
            choices = greedy_choices(module, self.validation_observations)
            result["validation_score"] = per_context_score(table, choices)
            if self.budget_scorers is not None:
                scorers = self.budget_scorers
                result["validation_price_score"] = result["validation_score"]
                result["validation_score"] = scorers["validation"].score(module)
                result["heldout_budget_score"] = scorers["heldout"].score(module)
                per_context = scorers["heldout_per_context"].score(module)
                result["heldout_budget_per_context_score"] = per_context
            result |= scorer.score(module)
            if keep is not None and dual is None:  # with a budget: the last iteration (below)
                keep.offer(algo.iteration, result["validation_score"], state)
            return result

        return evaluate

    def bank_record(self) -> dict[str, Any]:
        """The bank's facts for the learning record."""
        meta = self.bank.metadata
        return {
            "path": str(self.bank_path),
            "contexts": len(self.bank),
            "images": int(len(set(self.bank.image_ids.tolist()))),
            "heldout_images": len(self.heldout_images),
            "validation_contexts": len(self.validation_table),
            "value_unit": self.value_unit,
            "collection_time_s": meta.get("collection_time_s", float("nan")),
            "value_gflops": meta.get("value_gflops", float("nan")),
        }


class BestIteration:
    """Early stopping on a finite bank: the weights of the PPO iteration whose greedy choices
    score best on the validation contexts (never on the held-out ones, which only measure), by
    the per-context score (``policies.heldout_score.per_context_score``): the value signal is
    heavy-tailed, and by the mean-based score a few extreme validation contexts decided which
    iteration won (on one planted-rule bank they picked an untrained iteration 2 of 30).

    PPO revisits every banked context many times; past some point its network fits the training
    contexts' noise and its held-out score falls while its return still rises. The best weights
    are kept in ``path`` (a weights file recording the iteration, its validation score and the
    policy fingerprint), so a resumed Phase 2 keeps them.
    """

    def __init__(self, path: Path, fingerprint: str, obs_dim: int, config: Config) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.obs_dim = obs_dim
        self.rl = config.rl
        self.iteration = 0
        self.score = -math.inf

    def restore(self, history: list[dict[str, Any]]) -> None:
        """After a resume: the best iteration of the restored ``history``, if its weights file
        is the one this run wrote (same fingerprint and iteration)."""
        scored = [h for h in history if math.isfinite(h.get("validation_score", math.nan))]
        if not scored or not self.path.is_file():
            return
        best = max(scored, key=lambda h: h["validation_score"])
        saved = read_weights_file(self.path).metadata
        if saved.get("policy_fingerprint") == self.fingerprint and saved.get("iteration") == int(
            best["iteration"]
        ):
            self.iteration, self.score = int(best["iteration"]), float(best["validation_score"])

    def offer(self, iteration: int, score: float, state: dict[str, Any]) -> None:
        """Keep ``state`` if ``score`` beats every earlier iteration's (ties keep the earlier)."""
        if not score > self.score:
            return
        self.iteration, self.score = int(iteration), float(score)
        save_weights_file(
            self.path,
            state,
            obs_dim=self.obs_dim,
            hidden_sizes=self.rl.hidden_sizes,
            policy_head=self.rl.policy_head,
            metadata={
                "iteration": self.iteration,
                "validation_score": self.score,
                "policy_fingerprint": self.fingerprint,
            },
        )


def policy_environment(
    config: Config,
    datasets: DetectionDatasets,
    teacher_checkpoint: Path,
    snapshot_dir: Path,
    progress: bool = True,
) -> PolicyEnvironment:
    """Steps 2-3 of Phase 2: the bank; its split by image into held-out, validation and
    training contexts; the fixed value unit (the training contexts' ``s``); the held-out scorer;
    and the env PPO learns from (``rl.learner``), which never sees a held-out or validation
    image."""
    rl, seed = config.rl, config.runtime.seed
    bank, bank_path = decision_bank_for(config, teacher_checkpoint, snapshot_dir, progress)
    split = split_by_image(bank, rl.bank_heldout_fraction, seed)
    unit = split.train.value_unit()
    scorer = HeldOutScorer.from_split(
        split, rl.lam, unit, image_regimes_of(datasets), seed, rl.hidden_sizes
    )
    fitting = split_by_image(split.train, VALIDATION_FRACTION, seed + 1)
    heldout_images = [int(i) for i in split.heldout_images]
    unseen = heldout_images + [int(i) for i in fitting.heldout_images]
    if rl.learner == "bank":
        env_name = BANK_ENV_NAME
        # whole episodes within an iteration, so that every iteration reports a return
        slots = max(1, min(BANK_SLOTS, rl.train_batch_size))
        env_config: dict[str, Any] = {
            "slots": slots,
            "episode_steps": max(1, min(BANK_EPISODE_STEPS, rl.train_batch_size // slots)),
            "bank_file": str(bank_path),
            "heldout_images": unseen,
            "lam": rl.lam,
            "value_unit": unit,
            "seed": seed,
        }
    else:
        env_name = ENV_NAME
        env_config = {
            "config": config_to_dict(config),
            "teacher_checkpoint": str(teacher_checkpoint),
            "snapshot_dir": str(snapshot_dir),
            "seed": seed,
            "value_unit": unit,
            "exclude_images": unseen,
        }
    budget_scorers = None
    if rl.budget is not None:
        pair = static_subsets_around(fitting.train, bank.subset_costs, rl.budget)
        budget_scorers = {
            "validation": BudgetScorer.from_bank(
                fitting.heldout, unit, rl.budget, pair, seed, True
            ),
            "heldout": BudgetScorer.from_bank(split.heldout, unit, rl.budget, pair, seed),
            "heldout_per_context": BudgetScorer.from_bank(
                split.heldout, unit, rl.budget, pair, seed, True
            ),
        }
    return PolicyEnvironment(
        env_name,
        env_config,
        scorer,
        fitting.heldout,
        bank,
        bank_path,
        unit,
        heldout_images,
        rl.lam,
        np.setdiff1d(np.unique(bank.image_ids), np.asarray(unseen, dtype=np.int64)),
        budget_scorers,
    )


def _print_references(references: dict[str, Any]) -> None:
    print(
        f"held-out contexts: {references['heldout_contexts']} from "
        f"{references['heldout_images']} images; normalised score of the best static subset "
        f"({references['static_subset']}) {references['static_score']:.3f}, of the predictor "
        f"{references['predictor_score']:.3f} (random 0, oracle 1)",
        flush=True,
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
    _print_references(references)
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
