"""Steps 1-3 of Phase 2 (``experiments.policy_learning``): the snapshot pool, the decision bank
filled by the live env and split by image into held-out, validation and training contexts, and
the yardsticks on the held-out contexts, bundled as the ``PolicyEnvironment`` PPO learns in."""

from __future__ import annotations

import math
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
from envs.registration import BANK_ENV_NAME, ENV_NAME
from policies.budget_dual import PIDLagrangian, expected_cost
from policies.budget_score import BudgetScorer, static_subsets_around
from policies.heldout_score import HeldOutScorer, greedy_choices, per_context_score
from policies.ppo_setup import set_env_lam
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

__all__ = [
    "BEST_WEIGHTS_FILE",
    "BestIteration",
    "VALIDATION_FRACTION",
    "image_regimes_of",
    "decision_bank_for",
    "check_decision_bank",
    "PolicyEnvironment",
    "policy_environment",
    "print_references",
]


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


BEST_WEIGHTS_FILE = "best_weights.pt"
"""In the PPO checkpoint folder: the weights of the iteration ``BestIteration`` selected."""


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
            "value_by_progress": self.bank.value_by_progress(unit=self.value_unit),
        }


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


def print_references(references: dict[str, Any]) -> None:
    print(
        f"held-out contexts: {references['heldout_contexts']} from "
        f"{references['heldout_images']} images; normalised score of the best static subset "
        f"({references['static_subset']}) {references['static_score']:.3f}, of the predictor "
        f"{references['predictor_score']:.3f} (random 0, oracle 1)",
        flush=True,
    )
