"""AUROC: perfect, reversed, chance and tied rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpkd.report.auroc import auroc


def test_auroc_of_known_rankings() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(np.ones(4), labels) == 0.5  # all tied
    # one of the four positive-negative pairs is misordered
    assert auroc(np.array([0.1, 0.85, 0.8, 0.9]), labels) == 0.75


def test_auroc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auroc(scores, labels) == pytest.approx(pairwise)


def test_auroc_of_one_class_is_nan() -> None:
    assert math.isnan(auroc(np.array([0.2, 0.4]), np.array([1, 1])))
