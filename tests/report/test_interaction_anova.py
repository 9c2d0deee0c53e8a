"""Two-way ANOVA without replication, against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from rlpkd.report.interaction_anova import group_by_level_sum_of_squares, interaction_anova


def test_an_additive_matrix_has_no_interaction() -> None:
    # x_il = a_i + b_l: rows differ, columns differ, every row ranks the columns alike
    rows = np.array([0.0, 1.0, 5.0])[:, None]
    columns = np.array([0.0, 2.0, -1.0, 3.0])[None, :]
    anova = interaction_anova(rows + columns)
    assert anova.interaction_share == pytest.approx(0.0, abs=1e-12)
    # by hand: SS_sample = 4 * sum((r - 2)^2) = 4 * (4 + 1 + 9) = 56;
    # SS_level = 3 * sum((c - 1)^2) = 3 * (1 + 1 + 4 + 4) = 30
    assert anova.ss_sample == pytest.approx(56.0)
    assert anova.ss_level == pytest.approx(30.0)
    assert anova.ss_total == pytest.approx(86.0)


def test_a_pure_interaction_matrix_is_all_interaction() -> None:
    # row and column means all equal: every bit of variance is sample x level
    matrix = np.array([[1.0, -1.0], [-1.0, 1.0], [2.0, -2.0], [-2.0, 2.0]])
    anova = interaction_anova(matrix)
    assert anova.ss_sample == pytest.approx(0.0) and anova.ss_level == pytest.approx(0.0)
    assert anova.interaction_share == pytest.approx(1.0)
    assert anova.ss_interaction == pytest.approx(20.0)


def test_a_mixed_matrix_splits_as_computed_by_hand() -> None:
    # [[1, 2], [3, 7]]: m = 3.25; rows 1.5, 5; cols 2, 4.5
    anova = interaction_anova([[1.0, 2.0], [3.0, 7.0]])
    assert anova.ss_total == pytest.approx(20.75)
    assert anova.ss_sample == pytest.approx(2 * (1.75**2 + 1.75**2))  # 12.25
    assert anova.ss_level == pytest.approx(2 * (1.25**2 + 1.25**2))  # 6.25
    assert anova.ss_interaction == pytest.approx(2.25)  # residuals +-0.75 in every cell
    assert anova.interaction_share == pytest.approx(2.25 / 20.75)


def test_group_by_level_part_is_the_whole_interaction_when_groups_explain_it() -> None:
    # two groups with opposite level preferences, identical rows within a group
    matrix = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    groups = ["small", "small", "large", "large"]
    anova = interaction_anova(matrix)
    assert group_by_level_sum_of_squares(matrix, groups) == pytest.approx(anova.ss_interaction)
    # and none of it when the group means of the residuals vanish
    mixed = ["a", "b", "a", "b"]
    matrix = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert group_by_level_sum_of_squares(matrix, ["a", "b", "b", "a"]) == pytest.approx(0.0)
    assert group_by_level_sum_of_squares(matrix, mixed) == pytest.approx(
        interaction_anova(matrix).ss_interaction
    )


def test_a_constant_matrix_has_no_share_and_bad_shapes_fail() -> None:
    assert np.isnan(interaction_anova(np.ones((3, 4))).interaction_share)
    with pytest.raises(ValueError, match="2 x 2"):
        interaction_anova(np.ones((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        interaction_anova([[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(ValueError, match="one group per row"):
        group_by_level_sum_of_squares(np.ones((3, 2)), ["a", "b"])


def test_value_summary_reports_regime_preferences_and_pooling_is_scale_free() -> None:
    from rlpkd.report.level_value_summary import pool_value_matrices, summarise_value_matrix

    rng = np.random.default_rng(0)
    # small-only samples gain from P2, large-only from P5: a regime x level interaction
    small = rng.normal(0, 0.1, (20, 4)) + np.array([1.0, 0.0, 0.0, 0.0])
    large = rng.normal(0, 0.1, (20, 4)) + np.array([0.0, 0.0, 0.0, 1.0])
    values = np.concatenate([small, large])
    regimes = ["small-only"] * 20 + ["large-only"] * 20
    summary = summarise_value_matrix(values, regimes, ["small-only", "large-only"])
    assert summary["anova"]["interaction_share"] > 0.5
    assert summary["regime_x_level"]["share_of_interaction"] > 0.9
    assert summary["by_regime"]["small-only"]["best_level_share"][0] == pytest.approx(1.0)
    assert summary["by_regime"]["large-only"]["best_level_share"][3] == pytest.approx(1.0)
    assert summary["by_regime"]["small-only"]["anova"]["interaction_share"] < 0.9
    pooled = pool_value_matrices([values, 1000.0 * values])
    assert pooled.shape == (80, 4)
    assert np.allclose(pooled[:40], pooled[40:])
