"""The headroom plots: one heatmap panel per snapshot plus the pooled one, in std units."""

from __future__ import annotations

import numpy as np

from rlpkd.viz.headroom import plot_headroom_methods, plot_regime_level_values, regime_level_panels

LEVELS = ["P2", "P3", "P4", "P5"]


def _values() -> dict:
    snapshot = {
        "fraction": 0.5,
        "step": 10,
        "anova": {"interaction_share": 0.4},
        "normalised_mean_by_regime": {
            "small-only": [1.0, 0, 0, -1.0],
            "large-only": [0, 0, 0, 2.0],
        },
    }
    pooled = {
        "anova": {"interaction_share": 0.3},
        "by_regime": {"small-only": {"mean": [0.5, 0, 0, 0]}, "large-only": {"mean": [0, 0, 0, 1]}},
    }
    return {"snapshots": [snapshot, {**snapshot, "fraction": 0.0, "step": 0}], "pooled": pooled}


def test_panels_are_the_snapshots_then_pooled_with_regime_rows(tmp_path) -> None:
    panels = regime_level_panels(_values())
    assert len(panels) == 3 and panels[-1][0].startswith("pooled")
    title, regimes, matrix = panels[0]
    assert "0.5" in title and "0.40" in title
    assert regimes == ["small-only", "large-only"]
    assert np.array_equal(matrix, np.array([[1.0, 0, 0, -1.0], [0, 0, 0, 2.0]]))
    path = plot_regime_level_values(_values(), LEVELS, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_method_plot_takes_one_seed_methods_without_std(tmp_path) -> None:
    static = [{"levels": "P2", "kd_gflops": 0.5, "AP": 0.1}]
    methods = {
        "oracle": {
            "levels": "P2 / P5",
            "seeds": [0],
            "AP_mean": 0.12,
            "AP_std": None,
            "kd_gflops_mean": 0.4,
        },
    }
    path = plot_headroom_methods(static, methods, tmp_path / "m.png")
    assert path.stat().st_size > 0
