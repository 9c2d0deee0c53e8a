"""Area under the ROC curve: how well a score ranks positives above negatives."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["auroc"]


def auroc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """AUROC of ``scores`` against binary ``labels`` (any shape, flattened).

    The Mann-Whitney form (Hanley & McNeil, Radiology 1982): the probability that a random
    positive scores above a random negative, ties counting one half, computed from average ranks.
    NaN when the labels hold only one class.
    """
    score = np.asarray(scores, dtype=np.float64).ravel()
    label = np.asarray(labels).astype(bool).ravel()
    if score.shape != label.shape:
        raise ValueError(f"scores {score.shape} and labels {label.shape} differ in size")
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.arange(1, len(score) + 1, dtype=np.float64)
    for value in np.unique(score):
        tied = score == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    rank_sum = float(ranks[label].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
