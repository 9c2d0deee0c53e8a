"""The Pareto plot draws every series it is given, skips NaN rows and writes a valid PNG."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from rlpkd.report.sweep_layout import collect_failed_trials, collect_trials
from rlpkd.report.sweep_rows import comparison_rows, comparison_summary
from rlpkd.viz.pareto import draw_pareto, pareto_plot, pareto_series
from tests.report import SEED_NOISE, make_sweep, write_failed_trial

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(tmp_path):
    rows = comparison_rows(collect_trials(make_sweep(tmp_path)))
    return rows, comparison_summary(rows, 0.0)


def _artist(figure, gid):
    (found,) = figure.findobj(lambda artist: artist.get_gid() == gid)
    return found


def test_series_hold_every_kind(tmp_path):
    series = pareto_series(*_report(tmp_path))
    assert len(series["static"]) == 16
    assert [p["label"] for p in series["front"]] == [
        "none",
        "P4",
        "P3",
        "P3,P4",
        "P2,P3",
        "P2,P3,P4",
    ]
    assert [p["label"] for p in series["rl"]] == ["λ=0.3", "λ=0.1"]  # by kd GFLOPs
    assert series["rl"][1]["ap"] == pytest.approx(25.0)
    assert series["rl"][1]["ap_std"] == pytest.approx(100 * math.sqrt(2) * 0.002)
    assert set(series["nas"]) == {"darts", "gdas", "exhaustive"}
    assert series["nas"]["gdas"]["label"] == "gdas → P2/P2,P3,P4"
    assert [p["label"] for p in series["baselines"]] == ["random:0.5"]
    assert sorted(p["label"] for p in series["reference"]) == ["all levels", "no KD"]


def test_rows_with_nan_ap_are_skipped(tmp_path):
    rows, summary = _report(tmp_path)
    rows[0] = {**rows[0], "AP_mean": math.nan}  # rl λ=0.1
    series = pareto_series(rows, summary)
    assert [p["label"] for p in series["rl"]] == ["λ=0.3"]


def test_figure_draws_sixteen_static_points_and_each_series(tmp_path):
    figure = draw_pareto(pareto_series(*_report(tmp_path)), "test")
    try:
        assert len(_artist(figure, "static").get_offsets()) == 16
        assert len(_artist(figure, "rl").get_xdata()) == 2
        assert len(_artist(figure, "static-front").get_xdata()) == 6
        for method in ("darts", "gdas", "exhaustive"):
            marker = _artist(figure, f"nas:{method}")
            assert marker.get_markerfacecolor() == "none" and marker.get_markersize() >= 7
        labels = figure.axes[0].get_legend_handles_labels()[1]
        assert "RL policy (λ sweep)" in labels and "static front" in labels
    finally:
        plt.close(figure)


def test_pareto_plot_writes_a_png_and_no_temporary_files(tmp_path):
    rows, summary = _report(tmp_path)
    out = tmp_path / "plots" / "pareto.png"
    assert pareto_plot(rows, summary, out, "sweep") == out
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["pareto.png"]


def test_failed_trials_are_not_drawn(tmp_path):
    sweep = make_sweep(tmp_path)
    for seed in (0, 1):
        write_failed_trial(sweep, f"static_P3P4_s{seed}", "static", "P3,P4", seed)
        write_failed_trial(sweep, f"rl_0.1_s{seed}", "rl", "rl λ=0.1", seed)
    failed = collect_failed_trials(sweep)
    rows = comparison_rows(collect_trials(sweep), 0.0, failed)
    series = pareto_series(rows, comparison_summary(rows, 0.0, failed))
    assert "P3,P4" not in [p["label"] for p in series["static"] + series["front"]]
    assert [p["label"] for p in series["rl"]] == ["λ=0.3"]
    # a failed row is never drawn, even one that carries numbers (e.g. an AP 0.0)
    dead = {**rows[0], "status": "failed", "AP_mean": 0.0, "kd_gflops_mean": 1.0, "n": 0}
    assert pareto_series([dead], {"static_front": []})["rl"] == []


def test_each_rl_seed_is_drawn_at_its_own_cost(tmp_path):
    rows, summary = _report(tmp_path)
    series = pareto_series(rows, summary)
    by_label = {p["label"]: p for p in series["rl_seeds"]}
    assert sorted(by_label) == ["λ=0.1 seed 0", "λ=0.1 seed 1", "λ=0.3 seed 0", "λ=0.3 seed 1"]
    assert by_label["λ=0.1 seed 1"]["ap"] == pytest.approx(100 * (0.25 + SEED_NOISE[1]))
    assert by_label["λ=0.1 seed 1"]["kd_gflops"] == pytest.approx(5.5)
    figure = draw_pareto(series, "test")
    try:
        assert len(_artist(figure, "rl-seeds").get_offsets()) == 4
        assert "RL seeds" in figure.axes[0].get_legend_handles_labels()[1]
    finally:
        plt.close(figure)


def test_rl_controls_are_drawn_as_their_own_series(tmp_path):
    rows, summary = _report(tmp_path)
    assert pareto_series(rows, summary)["controls"] == {}
    # the plot knows no control by name: each is a series of its own, labelled by its description
    controls = [
        {**rows[0], "kind": "rl-control", "method": f"rl λ=0.1 {name}", "control": name}
        | {"description": description}
        for name, description in (("shuffled", "masks permuted"), ("gap-ranked", "largest gap"))
    ]
    series = pareto_series([*rows, *controls], summary)
    assert list(series["controls"]) == ["shuffled", "gap-ranked"]
    assert [p["label"] for p in series["controls"]["gap-ranked"]["points"]] == ["λ=0.1 gap-ranked"]
    figure = draw_pareto(series, "test")
    try:
        assert len(_artist(figure, "control:shuffled").get_xdata()) == 1
        assert len(_artist(figure, "control:gap-ranked").get_xdata()) == 1
        labels = figure.axes[0].get_legend_handles_labels()[1]
        assert "RL control gap-ranked: largest gap" in labels
    finally:
        plt.close(figure)
