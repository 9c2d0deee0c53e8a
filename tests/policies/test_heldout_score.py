"""The held-out score: the oracle scores 1, random 0, a static policy what the hand computes; the
predictor finds a rule the observation shows; the verdict says 'did not learn' when it did not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.decision_bank import DecisionBank, split_by_image
from policies.heldout_score import (
    HeldOutScorer,
    choice_summary,
    normalised_score,
    per_context_score,
    score_difference_interval,
    static_subset,
)
from policies.level_policy_module import build_level_module
from policies.value_predictor import best_subsets
from rlpkd.levels import subset_to_index
from rlpkd.report.learning_verdict import DID_NOT_LEARN, LEARNT, phase2_verdict
from tests.policies.toy_bank import TOY_BANK_OBS_DIM, TOY_COSTS, toy_bank


def _hand_bank() -> DecisionBank:
    """Two contexts, values by hand; costs 0 for 'none', 0.5 for P2 alone, 1 for every other."""
    costs = np.ones(16)
    costs[0], costs[subset_to_index(("P2",))] = 0.0, 0.5
    return DecisionBank(
        observations=np.zeros((2, 3), np.float32),
        level_values=np.array([[2.0, 0.0, 0.0, 0.0], [-2.0, 1.0, 0.0, 0.0]]),
        image_ids=np.array([0, 1]),
        progress=np.zeros(2),
        updates=np.zeros(2, np.int64),
        subset_costs=costs,
    )


def test_oracle_scores_one_random_zero_and_a_static_policy_what_the_hand_computes():
    bank = _hand_bank()
    table = bank.reward_table(lam=1.0, unit=2.0)  # Σ v / 2 − cost
    p2 = subset_to_index(("P2",))
    assert table[0, p2] == pytest.approx(2.0 / 2 - 0.5) and table[1, 0] == 0.0
    oracle = table.argmax(axis=1)
    assert normalised_score(table, oracle) == pytest.approx(1.0)
    # random is the mean over the 16 subsets: the 16 static policies average to exactly 0
    statics = [normalised_score(table, np.full(2, a)) for a in range(16)]
    assert np.mean(statics) == pytest.approx(0.0, abs=1e-12)
    # static P2 by hand: rewards 0.5 and −1.5; oracle per context: 0.5 (P2) and 0 (none, or P3
    # at 0.5 − 1); random: the row means
    random = table.mean(axis=1).mean()
    expected = ((0.5 - 1.5) / 2 - random) / ((0.5 + 0.0) / 2 - random)
    assert normalised_score(table, np.full(2, p2)) == pytest.approx(expected)
    assert static_subset(table) == int(np.argmax(table.mean(axis=0)))


def test_the_predictor_reads_a_rule_the_observation_shows_and_static_cannot():
    split = split_by_image(toy_bank(2000, seed=1, noise=0.5), 0.25, seed=0)
    scorer = HeldOutScorer.from_split(split, lam=0.0, unit=1.0)
    references = scorer.references()
    assert references["predictor_score"] > 0.9
    assert references["static_score"] < 0.2
    # about as good as the planted rule itself (the oracle also reads the values' noise)
    truth = best_subsets(np.where(split.heldout.observations > 0, 1.0, -1.0), 0.0, TOY_COSTS)
    assert references["predictor_score"] >= normalised_score(scorer.table, truth) - 0.05


def test_an_untrained_policy_did_not_learn_and_is_never_called_a_choice():
    split = split_by_image(toy_bank(800, seed=2), 0.25, seed=0)
    scorer = HeldOutScorer.from_split(split, lam=0.0, unit=1.0)
    module = build_level_module(TOY_BANK_OBS_DIM, [16])
    score = scorer.score(module)
    assert score["heldout_entropy"] > 0.99 * math.log(16)
    last = {**score, "learner/entropy": score["heldout_entropy"]}
    verdict = phase2_verdict(last, scorer.references())
    assert verdict["status"] == DID_NOT_LEARN
    assert "did not learn" in verdict["sentence"] and "near uniform" in verdict["sentence"]
    assert "policy's choice" not in verdict["sentence"]
    # the same numbers with a confident, better-than-static policy read as learnt
    learnt = last | {
        "learner/entropy": 0.5,
        "heldout_score": 0.9,
        "heldout_score_minus_static": 0.8,
        "heldout_score_minus_static_low": 0.7,
        "heldout_score_minus_static_high": 0.9,
    }
    assert phase2_verdict(learnt, scorer.references())["status"] == LEARNT


def test_a_confident_static_policy_did_not_learn_beyond_the_static_subset():
    references = {"static_score": 0.3, "static_subset": "all", "predictor_score": 0.31}
    last = {
        "learner/entropy": 0.2,
        "heldout_score": 0.3,
        "heldout_score_minus_static": 0.0,
        "heldout_score_minus_static_low": -0.01,
        "heldout_score_minus_static_high": 0.01,
        "heldout_static_agreement": 1.0,
        "heldout_share_off_most_common": 0.0,
    }
    verdict = phase2_verdict(last, references)
    assert verdict["status"] == DID_NOT_LEARN and not verdict["observation_has_structure"]
    assert "not above the best static subset" in verdict["sentence"]
    assert "no per-sample structure" in verdict["sentence"]


def test_score_difference_interval_resamples_images_and_covers_the_difference():
    table = np.random.default_rng(0).normal(size=(400, 16))
    better = table.argmax(axis=1)
    worse = np.zeros(400, dtype=np.int64)
    mean, low, high = score_difference_interval(table, better, worse, np.arange(400) // 4)
    assert low < mean < high and low > 0
    same, low0, high0 = score_difference_interval(table, worse, worse, np.arange(400) // 4)
    assert same == low0 == high0 == 0.0


def test_choice_summary_says_how_per_sample_the_choices_are():
    choices = np.array([15, 15, 15, 3])
    summary = choice_summary(choices, ["a", "a", "a", "b"])
    assert summary["most_common_subset"] == "all" and summary["share_off_most_common"] == 0.25
    assert summary["distinct_subsets"] == 2 and summary["subset_regime_mi_bits"] > 0


def test_the_per_context_score_weighs_every_context_the_same():
    # context 0: huge stakes, subset 1 best; context 1: small stakes, subset 2 best
    table = np.zeros((2, 16))
    table[0, 1], table[1, 2] = 160.0, 1.6
    oracle, static_one = np.array([1, 2]), np.array([1, 1])
    assert per_context_score(table, oracle) == pytest.approx(1.0)
    # the mean-based score hardly sees context 1; the per-context score gives it half the weight
    assert normalised_score(table, static_one) == pytest.approx((160.0 - 10.1) / (161.6 - 10.1))
    assert per_context_score(table, static_one) == pytest.approx((1.0 + (0 - 0.1) / 1.5) / 2)
    assert per_context_score(np.ones((3, 16)), np.zeros(3, dtype=np.int64)) == 0.0


def test_without_structure_the_predictor_is_no_worse_a_guess_than_the_static_subset():
    rng = np.random.default_rng(4)
    observations = rng.normal(size=(1600, 6)).astype(np.float32)
    values = 0.3 + rng.standard_t(2, size=(1600, 4))  # heavy-tailed noise, nothing observable
    bank = DecisionBank(
        observations=observations,
        level_values=values,
        image_ids=np.arange(1600) // 4,
        progress=np.zeros(1600),
        updates=np.arange(1600),
        subset_costs=TOY_COSTS,
    )
    references = HeldOutScorer.from_split(split_by_image(bank, 0.25, 0), 0.1, 1.0).references()
    assert references["predictor_kind"] == "constant"
    assert references["predictor_score"] == references["static_score"]


def test_the_verdict_says_when_typical_contexts_are_told_apart_but_the_mean_is_not_better():
    references = {
        "static_score": 0.5,
        "static_subset": "all",
        "predictor_score": 0.4,
        "static_per_context_score": 0.22,
        "predictor_per_context_score": 0.32,
    }
    last = {
        "learner/entropy": 0.6,
        "heldout_score": 0.49,
        "heldout_per_context_score": 0.35,
        "heldout_score_minus_static": -0.01,
        "heldout_score_minus_static_low": -0.05,
        "heldout_score_minus_static_high": 0.02,
        "heldout_static_agreement": 0.8,
        "heldout_share_off_most_common": 0.2,
    }
    verdict = phase2_verdict(last, references)
    assert verdict["status"] == DID_NOT_LEARN
    assert (
        "By the per-context score" in verdict["sentence"] and "heavy-tailed" in verdict["sentence"]
    )
    quiet = phase2_verdict(last | {"heldout_per_context_score": 0.23}, references)
    assert "By the per-context score" not in quiet["sentence"]
