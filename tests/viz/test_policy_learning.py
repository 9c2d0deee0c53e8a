"""The policy-learning plot aligns curves by iteration, draws gaps for non-finite values, and
writes a valid PNG even from an empty or all-NaN history."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from rlpkd.viz.policy_learning import (
    ENTROPY_TAG,
    KL_TAG,
    RETURN_TAG,
    SELECTION_RATE_TAGS,
    VALUE_LOSS_TAG,
    draw_policy_learning,
    policy_learning_plot,
    policy_learning_series,
    value_signal_tags,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records():
    return [
        {"iteration": 1, RETURN_TAG: 1.0, ENTROPY_TAG: 2.7, KL_TAG: 0.0, VALUE_LOSS_TAG: 0.5},
        {"iteration": 2, RETURN_TAG: None, ENTROPY_TAG: math.inf, "policy/value_mean_P2": 0.3},
        {"iteration": 3, RETURN_TAG: math.nan, ENTROPY_TAG: 2.1, SELECTION_RATE_TAGS[0]: 0.5},
    ]


def test_series_align_by_iteration_with_nan_gaps():
    series = policy_learning_series(_records())
    assert series["iteration"] == [1.0, 2.0, 3.0]
    assert series[RETURN_TAG][0] == 1.0 and np.isnan(series[RETURN_TAG][1:]).all()
    assert series[ENTROPY_TAG][0] == 2.7 and np.isnan(series[ENTROPY_TAG][1])
    assert np.isnan(series[KL_TAG][1:]).all()
    assert series["policy/value_mean_P2"][1] == 0.3
    assert math.isnan(series["policy/value_mean_P2"][0]) and math.isnan(
        series["policy/value_mean_P2"][2]
    )


def test_value_signal_tags_leave_out_the_critic_loss():
    assert value_signal_tags(_records()) == ["policy/value_mean_P2"]


def test_every_recorded_tag_is_drawn_and_tagged():
    figure = draw_policy_learning(_records(), "t")
    try:
        gids = {artist.get_gid() for artist in figure.findobj() if artist.get_gid()}
        expected = {RETURN_TAG, ENTROPY_TAG, KL_TAG, VALUE_LOSS_TAG, "policy/value_mean_P2"}
        assert expected | {SELECTION_RATE_TAGS[0]} == gids
        (entropy_line,) = figure.findobj(lambda artist: artist.get_gid() == ENTROPY_TAG)
        np.testing.assert_array_equal(entropy_line.get_xdata(), [1.0, 2.0, 3.0])
    finally:
        plt.close(figure)


def test_plot_writes_a_png_from_empty_and_non_finite_histories(tmp_path):
    for name, records in {
        "empty": [],
        "nan": [{"iteration": 1, RETURN_TAG: math.nan, KL_TAG: -math.inf}],
        "mixed": _records(),
    }.items():
        path = policy_learning_plot(records, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "mixed.png", "nan.png"]
