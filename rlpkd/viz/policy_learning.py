"""Phase 2's learning curves: return, PPO losses, entropy and KL, selection rates, value signal.

The input is one ``{tag: value}`` record per PPO iteration with the TensorBoard tags Phase 2
writes (``policy/return``, ``policy/policy_loss``, ``policy/value_loss``, ``policy/entropy``,
``policy/kl``, ``policy/selection_rate_P2..P5``, ``policy/value_*`` of the env's value signal)
and ``iteration``. ``policy_learning_series`` turns them into aligned curves (what a test can
check); ``draw_policy_learning`` draws them, each line's artist tagged with its tag as gid;
``policy_learning_plot`` writes the PNG. A missing, ``None`` or non-finite value is a gap in its
curve, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rlpkd.atomic_files import atomic_write  # noqa: E402
from rlpkd.levels import LEVELS  # noqa: E402

__all__ = [
    "POLICY_TAG_PREFIX",
    "RETURN_TAG",
    "REWARD_PER_DECISION_TAG",
    "POLICY_LOSS_TAG",
    "VALUE_LOSS_TAG",
    "ENTROPY_TAG",
    "KL_TAG",
    "SELECTION_RATE_TAGS",
    "HELDOUT_SCORE_TAG",
    "HELDOUT_SCORE_TAGS",
    "value_signal_tags",
    "policy_learning_series",
    "draw_policy_learning",
    "policy_learning_plot",
]

POLICY_TAG_PREFIX = "policy/"
RETURN_TAG = "policy/return"
REWARD_PER_DECISION_TAG = "policy/reward_per_decision"
POLICY_LOSS_TAG = "policy/policy_loss"
VALUE_LOSS_TAG = "policy/value_loss"
ENTROPY_TAG = "policy/entropy"
KL_TAG = "policy/kl"
SELECTION_RATE_TAGS: tuple[str, ...] = tuple(f"policy/selection_rate_{level}" for level in LEVELS)
HELDOUT_SCORE_TAG = "policy/heldout_score"
HELDOUT_SCORE_TAGS: tuple[str, ...] = (
    HELDOUT_SCORE_TAG,
    "policy/heldout_static_score",
    "policy/heldout_predictor_score",
    "policy/validation_score",
)
"""The normalised scores (random 0, oracle 1) on the held-out contexts: the policy's greedy
choices, the best static subset, the supervised predictor; and the policy's on the validation
contexts that choose its iteration."""
_VALUE_SIGNAL_PREFIX = "policy/value_"


def _as_float(value: Any) -> float:
    """``value`` as a finite float, else NaN (a gap in the curve)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def value_signal_tags(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``policy/value_*`` tags of the env's value signal in ``records``, sorted (the
    critic's ``policy/value_loss`` is not one)."""
    tags = {
        tag
        for record in records
        for tag in record
        if tag.startswith(_VALUE_SIGNAL_PREFIX) and tag != VALUE_LOSS_TAG
    }
    return sorted(tags)


def policy_learning_series(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{"iteration": [...], tag: [...]}`` for every tag in ``records``, aligned by record;
    NaN where a record lacks the tag or holds ``None`` or a non-finite number. A record without
    ``iteration`` counts as its 1-based position."""
    tags = sorted({tag for record in records for tag in record if tag != "iteration"})
    series: dict[str, list[float]] = {"iteration": []}
    for tag in tags:
        series[tag] = []
    for position, record in enumerate(records, start=1):
        iteration = _as_float(record.get("iteration"))
        series["iteration"].append(position if math.isnan(iteration) else iteration)
        for tag in tags:
            series[tag].append(_as_float(record.get(tag)))
    return series


def _draw(axes: plt.Axes, series: dict[str, list[float]], tag: str, **style: Any) -> None:
    values = series.get(tag)
    if values is None:
        return
    label = tag.removeprefix(POLICY_TAG_PREFIX)
    (line,) = axes.plot(series["iteration"], values, marker="o", markersize=3, label=label, **style)
    line.set_gid(tag)


def _plain_ticks(axes: plt.Axes) -> None:
    """Integer iterations on x; y ticks as values, not an offset plus 1e-6 steps."""
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.ticklabel_format(axis="y", useOffset=False)
    axes.tick_params(labelsize=7)


def _finish(axes: plt.Axes, title: str) -> None:
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("PPO iteration", fontsize=8)
    _plain_ticks(axes)
    axes.grid(alpha=0.3)
    if axes.get_lines():
        axes.legend(fontsize=7)
    else:
        axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)


def draw_policy_learning(records: Sequence[Mapping[str, Any]], title: str = "") -> plt.Figure:
    """A 2x4 figure: return; policy loss; value loss; held-out normalised score (policy, best
    static subset, predictor); entropy (left) and KL (right axis); selection rate per level; the
    live env's value-signal statistics (``policy/value_*``, when PPO learnt on the live env)."""
    series = policy_learning_series(records)
    figure, grid = plt.subplots(2, 4, figsize=(17, 6.5))
    (ret, policy_loss, value_loss, heldout), (entropy, rates, value_signal, unused) = grid
    unused.axis("off")
    for tag in HELDOUT_SCORE_TAGS:
        _draw(heldout, series, tag)
    _finish(heldout, "held-out normalised score (random 0, oracle 1)")
    _draw(ret, series, REWARD_PER_DECISION_TAG, color="tab:green")
    episode = ret.twinx()
    _draw(episode, series, RETURN_TAG, color="tab:gray", alpha=0.6)
    _plain_ticks(episode)
    episode.set_ylabel("episode return (all slots)", fontsize=8, color="tab:gray")
    _finish(ret, "reward per decision and episode return")
    _draw(policy_loss, series, POLICY_LOSS_TAG)
    _finish(policy_loss, "policy loss")
    _draw(value_loss, series, VALUE_LOSS_TAG)
    _finish(value_loss, "value-function loss")
    _draw(entropy, series, ENTROPY_TAG, color="tab:blue")
    kl = entropy.twinx()
    _draw(kl, series, KL_TAG, color="tab:red")
    _plain_ticks(kl)
    kl.set_ylabel("KL", fontsize=8, color="tab:red")
    entropy.set_ylabel("entropy", fontsize=8, color="tab:blue")
    _finish(entropy, "entropy and mean KL")
    if kl.get_lines():
        kl.legend(fontsize=7, loc="lower right")
    for tag in SELECTION_RATE_TAGS:
        _draw(rates, series, tag)
    rates.set_ylim(-0.05, 1.05)
    _finish(rates, "selection rate per level (sampled)")
    for tag in value_signal_tags(records):
        _draw(value_signal, series, tag)
    _finish(value_signal, "value signal (env)")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def policy_learning_plot(
    records: Sequence[Mapping[str, Any]], path: Path, title: str = "Phase 2: policy learning"
) -> Path:
    """Write the learning-curve figure of ``records`` to ``path`` (PNG, replaced atomically)."""
    figure = draw_policy_learning(records, title)
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(figure)
