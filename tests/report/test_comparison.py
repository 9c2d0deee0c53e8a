"""The sweep comparison: rows per method, best static subset, static front, RL vs front, files."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest

from rlpkd.errors import DataError
from rlpkd.levels import all_subsets, format_levels
from rlpkd.report.comparison import build_sweep_report, summary_sentences
from rlpkd.report.sweep_layout import collect_failed_trials, collect_trials
from rlpkd.report.sweep_rows import comparison_rows, comparison_summary
from tests.report import (
    make_sweep,
    subset_ap,
    subset_kd_gflops,
    write_failed_trial,
    write_nas_trials,
    write_static_trials,
    write_trial,
)

EXPECTED_FRONT = ["none", "P4", "P3", "P3,P4", "P2,P3", "P2,P3,P4"]


def _rows(tmp_path, lam=0.0):
    return comparison_rows(collect_trials(make_sweep(tmp_path)), lam)


def _by_method(rows):
    return {row["method"]: row for row in rows}


def test_collect_trials_reads_every_finished_trial_and_skips_unfinished(tmp_path):
    trials = collect_trials(make_sweep(tmp_path))
    assert len(trials) == 16 * 2 + 3 * 2 + 2 * 2 + 2
    assert "rl_1_s0" not in {t["trial_id"] for t in trials}


def test_missing_trials_dir_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "trials")):
        collect_trials(tmp_path)


def test_corrupt_metrics_is_a_data_error_naming_the_file(tmp_path):
    sweep = make_sweep(tmp_path)
    broken = sweep / "trials" / "static_P2_s0" / "metrics.json"
    broken.write_text('{"AP": 0.2, ')
    with pytest.raises(DataError, match="static_P2_s0"):
        collect_trials(sweep)


def test_rows_are_mean_and_std_over_seeds(tmp_path):
    rows = _by_method(_rows(tmp_path))
    p3 = rows["P3"]
    aps = [subset_ap(("P3",)) - 0.002, subset_ap(("P3",)) + 0.002]
    assert p3["n"] == 2 and p3["seeds"] == [0, 1] and p3["kind"] == "static"
    assert p3["AP_mean"] == pytest.approx(statistics.fmean(aps))
    assert p3["AP_std"] == pytest.approx(statistics.stdev(aps))
    assert p3["kd_gflops_mean"] == pytest.approx(5.0) and p3["kd_gflops_std"] == 0.0
    assert math.isnan(p3["APs_mean"])  # null in every seed
    assert rows["rl λ=0.1"]["lam"] == 0.1 and rows["rl λ=0.1"]["AP_mean"] == pytest.approx(0.25)
    assert rows["darts"]["search_wall_time_s_mean"] == pytest.approx(12.0)
    assert rows["darts"]["search_wall_time_s_std"] == pytest.approx(statistics.stdev([10, 14]))
    assert rows["gdas"]["picks"] == {0: "P2", 1: "P2,P3,P4"}


def test_rows_are_ordered_rl_by_lam_nas_baselines_static_by_cost(tmp_path):
    rows = _rows(tmp_path)
    kinds = [row["kind"] for row in rows]
    assert kinds == ["rl"] * 2 + ["nas"] * 3 + ["baseline"] + ["static"] * 16
    assert [row["method"] for row in rows[:5]] == [
        "rl λ=0.1",
        "rl λ=0.3",
        "darts",
        "gdas",
        "exhaustive",
    ]
    static_costs = [row["kd_gflops_mean"] for row in rows if row["kind"] == "static"]
    assert static_costs == sorted(static_costs) and len(static_costs) == 16


def test_search_cost_fraction_is_relative_to_exhaustive(tmp_path):
    rows = _by_method(_rows(tmp_path))
    assert rows["darts"]["search_cost_fraction"] == pytest.approx(12.0 / 120.0)
    assert rows["darts"]["search_kd_gflops_fraction"] == pytest.approx(50.0 / 1000.0)
    assert rows["gdas"]["search_cost_fraction"] == pytest.approx(20.0 / 120.0)
    assert rows["exhaustive"]["search_cost_fraction"] == pytest.approx(1.0)
    assert "search_cost_fraction" not in rows["P2"]


def test_best_static_is_the_best_mean_ap_at_lam_zero(tmp_path):
    summary = comparison_summary(_rows(tmp_path), 0.0)
    assert summary["best_static"]["method"] == "P2,P3,P4"
    assert summary["best_static"]["AP_mean"] == pytest.approx(0.29)
    assert summary["best_static"]["runner_up"] == "all"


def test_best_static_respects_lam(tmp_path):
    # 0.084 / kd_gflops(all) = 0.008 AP per GFLOP: P3,P4 scores .212, P2,P3,P4 .210, none .200.
    rows = _rows(tmp_path, lam=0.084)
    summary = comparison_summary(rows, 0.084)
    assert summary["kd_gflops_normaliser"] == pytest.approx(10.5)
    assert summary["best_static"]["method"] == "P3,P4"
    assert summary["best_static"]["score"] == pytest.approx(0.26 - 0.008 * 6.0)
    assert summary["best_static"]["margin_to_runner_up"] == pytest.approx(0.002)


def test_static_front_holds_exactly_the_undominated_subsets(tmp_path):
    summary = comparison_summary(_rows(tmp_path), 0.0)
    front = [point["method"] for point in summary["static_front"]]
    assert front == EXPECTED_FRONT
    points = {format_levels(s): (subset_ap(s), subset_kd_gflops(s)) for s in all_subsets()}
    for name, (ap, kd) in points.items():
        dominated = any(a >= ap and k <= kd and (a > ap or k < kd) for a, k in points.values())
        assert dominated == (name not in front), name


def test_nas_found_best_static_true_and_false(tmp_path):
    outcomes = comparison_summary(_rows(tmp_path), 0.0)["nas_found_best_static"]
    assert outcomes["darts"]["found"] is True
    assert outcomes["exhaustive"]["found"] is True
    assert outcomes["gdas"]["found"] is False
    assert outcomes["gdas"]["picks"] == {0: "P2", 1: "P2,P3,P4"}
    assert outcomes["gdas"]["regret"] == pytest.approx(0.29 - (0.23 + 0.29) / 2)
    assert outcomes["darts"]["search_cost_fraction"] == pytest.approx(0.1)


def test_rl_against_the_static_front_one_above_one_below(tmp_path):
    outcomes = comparison_summary(_rows(tmp_path), 0.0)["rl_vs_static_front"]
    by_method = {o["method"]: o for o in outcomes}
    high = by_method["rl λ=0.1"]  # 5.5 GFLOPs: best front point at <= 5.5 is P3 (.24)
    assert high["front_method"] == "P3" and high["above"] is True
    assert high["diff_points"] == pytest.approx(1.0)
    low = by_method["rl λ=0.3"]  # 4.5 GFLOPs: P4 (.22)
    assert low["front_method"] == "P4" and low["above"] is False
    assert low["diff_points"] == pytest.approx(-1.0)


def test_rl_seeds_at_different_costs_are_each_compared_at_their_own_cost(tmp_path):
    """Two seeds of one λ that land on no KD and on all levels: the row's mean cost matches
    neither seed, so each seed is also compared with the front at its own cost."""
    sweep = make_sweep(tmp_path)
    everything = ("P2", "P3", "P4", "P5")
    seeds = {0: ((), 0.19), 1: (everything, 0.30)}
    for seed, (levels, ap) in seeds.items():
        metrics = {"AP": ap, "kd_gflops": subset_kd_gflops(levels), "seed": seed, "lam": 0.5}
        metrics |= {"kind": "rl", "method": "rl λ=0.5", "levels": "rl-policy"}
        write_trial(sweep, f"rl_0.5_s{seed}", metrics)
    rows = comparison_rows(collect_trials(sweep), 0.0)
    static = _by_method(rows)
    outcome = next(
        o for o in comparison_summary(rows, 0.0)["rl_vs_static_front"] if o["method"] == "rl λ=0.5"
    )
    assert outcome["kd_gflops_mean"] == pytest.approx(subset_kd_gflops(everything) / 2)
    assert [s["front_method"] for s in outcome["per_seed"]] == ["none", "P2,P3,P4"]
    differences = [
        100 * (0.19 - static["none"]["AP_mean"]),
        100 * (0.30 - static["P2,P3,P4"]["AP_mean"]),
    ]
    assert [s["diff_points"] for s in outcome["per_seed"]] == pytest.approx(differences)
    assert outcome["per_seed_diff_points"] == pytest.approx(statistics.fmean(differences))
    assert outcome["per_seed_diff_std_points"] == pytest.approx(statistics.stdev(differences))
    assert outcome["per_seed_above"] is (statistics.fmean(differences) > 0)
    sentence = next(s for s in summary_sentences(comparison_summary(rows, 0.0)) if "λ=0.5" in s)
    assert "per seed, each at its own kd GFLOPs" in sentence and "front none / P2,P3,P4" in sentence


def test_rl_seed_cheaper_than_every_front_point_leaves_the_per_seed_verdict_open(tmp_path):
    sweep = tmp_path / "sweep"
    write_static_trials(sweep, subsets=[("P4",), ("P3", "P4")])
    metrics = {"AP": 0.2, "kd_gflops": 0.0, "seed": 0, "lam": 0.7, "kind": "rl"}
    write_trial(sweep, "rl_0.7_s0", metrics | {"method": "rl λ=0.7", "levels": "rl-policy"})
    rows = comparison_rows(collect_trials(sweep), 0.0)
    outcome = next(
        o for o in comparison_summary(rows, 0.0)["rl_vs_static_front"] if o["method"] == "rl λ=0.7"
    )
    assert outcome["per_seed"][0]["front_method"] is None
    assert outcome["per_seed_above"] is None and outcome["above"] is None


def test_results_csv_parses_back_with_the_same_numbers(tmp_path):
    sweep = make_sweep(tmp_path)
    report = build_sweep_report(sweep, lam=0.0)
    with open(sweep / "results.csv", newline="") as handle:
        parsed = {line["method"]: line for line in csv.DictReader(handle)}
    assert len(parsed) == len(report["methods"])
    for row in report["methods"]:
        line = parsed[row["method"]]
        assert line["kind"] == row["kind"] and int(line["n"]) == row["n"]
        assert line["seeds"] == ",".join(map(str, row["seeds"]))
        for key in ("AP_mean", "AP_std", "kd_gflops_mean", "wall_time_s_mean"):
            assert float(line[key]) == row[key]
    assert line["APs_mean"] == ""  # NaN is an empty cell
    assert float(parsed["darts"]["search_cost_fraction"]) == pytest.approx(0.1)
    assert parsed["gdas"]["picks"] == "0:P2;1:P2,P3,P4"
    assert parsed["P2"]["search_cost_fraction"] == "" and parsed["P2"]["picks"] == ""


def test_report_files_and_sentences(tmp_path):
    sweep = make_sweep(tmp_path)
    report = build_sweep_report(sweep, lam=0.0)
    assert set(report["paths"]) == {"json", "markdown", "csv", "pareto"}
    saved = json.loads((sweep / "report.json").read_text())
    assert saved["summary"]["best_static"]["method"] == "P2,P3,P4"
    assert saved["summary"]["nas_found_best_static"]["gdas"]["picks"] == {
        "0": "P2",
        "1": "P2,P3,P4",
    }
    assert len(saved["methods"]) == 22
    markdown = (sweep / "report.md").read_text()
    assert "| method | seeds | AP |" in markdown
    assert "| P3 | 0,1 | 24.0 ± 0.3 |" in markdown
    assert "best static subset: P2,P3,P4 (AP 29.0 %" in markdown
    assert (
        "darts picked P2,P3,P4 (seeds 0,1); the best static: yes; "
        "search time 0.100 of exhaustive's" in markdown
    )
    assert "gdas picked P2 (seed 0); P2,P3,P4 (seed 1); the best static: no" in markdown
    assert (
        "rl λ=0.1: 25.0 % at 5.5 kd GFLOPs vs static front 24.0 % (P3) → above by 1.00" in markdown
    )
    assert (
        "rl λ=0.3: 21.0 % at 4.5 kd GFLOPs vs static front 22.0 % (P4) → below by 1.00" in markdown
    )
    assert (sweep / "plots" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lam_defaults_to_the_sweep_config(tmp_path):
    report = build_sweep_report(make_sweep(tmp_path, lam=0.084))
    assert report["summary"]["lam"] == 0.084
    assert report["summary"]["best_static"]["method"] == "P3,P4"


def test_partial_sweep_one_seed_no_rl_no_exhaustive(tmp_path):
    sweep = tmp_path / "sweep"
    write_static_trials(sweep, seeds=(0,), subsets=[(), ("P3",), ("P2", "P3")])
    write_nas_trials(sweep, methods=("darts",), seeds=(0,))
    (sweep / "trials" / "static_all_s0").mkdir()  # still running
    report = build_sweep_report(sweep)
    rows = _by_method(report["methods"])
    assert set(rows) == {"none", "P3", "P2,P3", "darts"}
    assert rows["P3"]["AP_std"] == 0.0 and rows["P3"]["n"] == 1
    assert math.isnan(rows["darts"]["search_cost_fraction"])  # no exhaustive row
    summary = report["summary"]
    assert summary["best_static"]["method"] == "P2,P3"
    assert summary["rl_vs_static_front"] == []
    assert summary["nas_found_best_static"]["darts"]["found"] is False  # picked P2,P3,P4
    assert math.isnan(summary["nas_found_best_static"]["darts"]["regret"])  # pick not trained
    assert (
        json.loads((sweep / "report.json").read_text())["methods"][0]["search_cost_fraction"]
        is None
    )
    assert (sweep / "plots" / "pareto.png").is_file()


def test_lam_without_the_all_row_leaves_the_best_static_unknown(tmp_path):
    sweep = tmp_path / "sweep"
    write_static_trials(sweep, seeds=(0,), subsets=[(), ("P3",)])
    report = build_sweep_report(sweep, lam=0.1)
    assert report["summary"]["best_static"] is None
    assert "needs the finished 'all' trial" in (sweep / "report.md").read_text()


def test_no_finished_trials_is_a_data_error(tmp_path):
    (tmp_path / "trials" / "t0").mkdir(parents=True)
    with pytest.raises(DataError, match="no finished trials"):
        build_sweep_report(tmp_path)


def test_trial_without_a_kind_is_a_data_error(tmp_path):
    write_trial(tmp_path, "odd", {"method": "P2", "seed": 0, "AP": 0.1})
    with pytest.raises(DataError, match="lacks kind"):
        collect_trials(tmp_path)


def test_a_trial_still_running_is_skipped(tmp_path):
    sweep = make_sweep(tmp_path)
    before = len(collect_trials(sweep))
    # what run_student writes before the trial adds its own fields (kind, trial_id, ...)
    write_trial(sweep, "rl-running", {"AP": 0.05, "seed": 0, "student_fingerprint": "abc"})
    assert len(collect_trials(sweep)) == before


def test_only_the_trials_the_sweep_lists_are_reported(tmp_path):
    sweep = make_sweep(tmp_path)
    trials = collect_trials(sweep)
    kept = [t["trial_id"] for t in trials if t["kind"] != "rl"]  # e.g. the lambdas were dropped
    (sweep / "trials.json").write_text(json.dumps({"trial_ids": kept}))
    assert sorted(t["trial_id"] for t in collect_trials(sweep)) == sorted(kept)


def _sweep_with_failures(tmp_path):
    """The synthetic sweep where P3,P4 (on the front; best at λ=0.084) diverged on both seeds,
    P2,P3,P4 (best at λ=0) on seed 1, and gdas on both seeds (no metrics left)."""
    sweep = make_sweep(tmp_path)
    for seed in (0, 1):
        write_failed_trial(sweep, f"static_P3P4_s{seed}", "static", "P3,P4", seed)
        write_failed_trial(sweep, f"nas_gdas_s{seed}", "nas", "gdas", seed, stale_ap=None)
    write_failed_trial(sweep, "static_P2P3P4_s1", "static", "P2,P3,P4", 1, stale_ap=0.9)
    return sweep


def test_failed_trials_are_listed_as_failed_and_left_out_of_rows_and_fronts(tmp_path):
    sweep = _sweep_with_failures(tmp_path)
    finished = {t["trial_id"] for t in collect_trials(sweep)}
    assert not finished & {"static_P3P4_s0", "static_P3P4_s1", "static_P2P3P4_s1"}
    failed = collect_failed_trials(sweep)
    assert len(failed) == 5 and all(f["term"] == "detection" for f in failed)

    report = build_sweep_report(sweep, lam=0.0)
    rows = _by_method(report["methods"])
    dead = rows["P3,P4"]
    assert dead["status"] == "failed" and dead["n"] == 0 and dead["failed_seeds"] == [0, 1]
    assert math.isnan(dead["AP_mean"]) and math.isnan(dead["score"])  # never AP 0.0
    assert rows["gdas"]["status"] == "failed" and rows["gdas"]["picks"] == {}
    partly = rows["P2,P3,P4"]
    assert partly["status"] == "partly failed" and partly["seeds"] == [0]
    assert partly["AP_mean"] == pytest.approx(subset_ap(("P2", "P3", "P4")) - 0.002)  # seed 0
    assert rows["P3"]["status"] == "finished" and rows["P3"]["failed_seeds"] == []

    summary = report["summary"]
    front = [p["method"] for p in summary["static_front"]]
    # without P3,P4, P3,P4,P5 (6.5 GFLOPs, AP .255) is no longer dominated
    assert front == ["none", "P4", "P3", "P3,P4,P5", "P2,P3", "P2,P3,P4"]
    assert summary["best_static"]["method"] == "P2,P3,P4"  # from its finished seed only
    assert "gdas" not in summary["nas_found_best_static"]
    assert summary["n_trials"] == 16 * 2 + 3 * 2 + 2 * 2 + 2 - 5
    assert len(summary["failed_trials"]) == 5
    assert build_sweep_report(sweep, lam=0.084)["summary"]["best_static"]["method"] != "P3,P4"

    with open(sweep / "results.csv", newline="") as handle:
        lines = {line["method"]: line for line in csv.DictReader(handle)}
    assert lines["P3,P4"]["status"] == "failed" and lines["P3,P4"]["AP_mean"] == ""
    assert lines["P3,P4"]["failed_seeds"] == "0,1" and lines["P3,P4"]["n"] == "0"
    assert lines["P2,P3,P4"]["status"] == "partly failed"
    assert lines["P3"]["status"] == "finished"
    markdown = (sweep / "report.md").read_text()
    assert "## Failed trials" in markdown
    assert (
        "- static_P3P4_s0 (static P3,P4, seed 0): training diverged in student P3,P4 seed 0 "
        "at step 2: loss term 'detection' is nan" in markdown
    )
    assert "| P3,P4 | " in markdown and "failed (seeds 0,1)" in markdown
    saved = json.loads((sweep / "report.json").read_text())
    assert {f["trial_id"] for f in saved["failed_trials"]} >= {"nas_gdas_s0", "nas_gdas_s1"}


def test_a_sweep_whose_trials_all_failed_still_reports_them(tmp_path):
    sweep = tmp_path / "sweep"
    write_failed_trial(sweep, "static_P2_s0", "static", "P2", 0, stale_ap=None)
    report = build_sweep_report(sweep)
    assert [row["status"] for row in report["methods"]] == ["failed"]
    assert report["summary"]["best_static"] is None and report["summary"]["n_trials"] == 0
    assert "static_P2_s0" in (sweep / "report.md").read_text()


def test_a_failed_trial_the_sweep_no_longer_lists_is_not_reported(tmp_path):
    sweep = _sweep_with_failures(tmp_path)
    kept = [t["trial_id"] for t in collect_trials(sweep)]
    (sweep / "trials.json").write_text(json.dumps({"trial_ids": [*kept, "nas_gdas_s0"]}))
    assert [f["trial_id"] for f in collect_failed_trials(sweep)] == ["nas_gdas_s0"]


def test_rl_controls_get_rows_paired_differences_and_mutual_information(tmp_path):
    sweep = make_sweep(tmp_path)
    # give λ=0.1's trials a shuffled control 2 and 4 points below, random subsets 1 point above,
    # and the MI of the policy and its shuffled control, as experiments.controls records them
    for seed, (drop, mi) in enumerate(((0.02, 0.30), (0.04, 0.50))):
        path = sweep / "trials" / f"rl_0.1_s{seed}" / "metrics.json"
        metrics = json.loads(path.read_text())
        shuffled = {
            "AP": metrics["AP"] - drop,
            "kd_gflops": metrics["kd_gflops"],
            "control": "shuffled",
            "control_kind": "policy-derived",
            "description": "the policy's masks permuted across each batch",
            "subset_regime_mi_bits": 0.01 * seed,
        }
        random_subsets = {
            "AP": metrics["AP"] + 0.01,
            "kd_gflops": metrics["kd_gflops"],
            "control": "random-subsets",
            "control_kind": "random",
            "description": "independent per-level coin flips",
        }
        metrics |= {
            "controls": {"random-subsets": random_subsets, "shuffled": shuffled},
            "subset_regime_mi_bits": mi,
        }
        path.write_text(json.dumps(metrics))
    report = build_sweep_report(sweep, lam=0.0)
    rows = report["methods"]
    methods = [row["method"] for row in rows]
    # the controls' rows follow their RL row; trial counts do not count them
    at = methods.index("rl λ=0.1")
    assert methods[at + 1 : at + 3] == ["rl λ=0.1 random-subsets", "rl λ=0.1 shuffled"]
    random_row = _by_method(rows)["rl λ=0.1 random-subsets"]
    assert random_row["kind"] == "rl-control" and random_row["seeds"] == [0, 1]
    assert random_row["control_kind"] == "random"
    assert _by_method(rows)["rl λ=0.1"]["minus_random-subsets_AP_mean"] == pytest.approx(-0.01)
    control = _by_method(rows)["rl λ=0.1 shuffled"]
    policy = _by_method(rows)["rl λ=0.1"]
    assert control["kind"] == "rl-control" and control["seeds"] == [0, 1]
    assert control["AP_mean"] == pytest.approx(policy["AP_mean"] - 0.03)
    assert policy["minus_shuffled_AP_mean"] == pytest.approx(0.03)
    assert policy["minus_shuffled_AP_std"] == pytest.approx(statistics.stdev([0.02, 0.04]))
    assert policy["subset_regime_mi_bits_mean"] == pytest.approx(0.4)
    assert control["subset_regime_mi_bits_mean"] == pytest.approx(0.005)
    assert "minus_shuffled_AP_mean" not in _by_method(rows)["rl λ=0.3"]
    summary = report["summary"]
    assert summary["kinds"] == {"rl": 4, "nas": 6, "baseline": 2, "static": 32}
    assert summary["n_trials"] == 44
    outcome = next(o for o in summary["rl_vs_static_front"] if o["method"] == "rl λ=0.1")
    shuffled_outcome = next(c for c in outcome["controls"] if c["name"] == "shuffled")
    assert shuffled_outcome["points"] == pytest.approx(3.0)
    assert outcome["shuffled_subset_regime_mi_bits"] == pytest.approx(0.005)
    markdown = (sweep / "report.md").read_text()
    assert (
        "vs shuffled (the policy's masks permuted across each batch) → above by 3.00 points "
        "(± 1.41 std, 2 paired seeds)"
    ) in markdown
    assert "I(subset; regime) = 0.400 bits (shuffled 0.005)" in markdown
    assert (
        "vs random-subsets (independent per-level coin flips) → below by 1.00 points (± 0.00 std"
        in markdown
    )
    table_row = next(line for line in markdown.splitlines() if "| rl λ=0.1 shuffled |" in line)
    assert "| rl-control (policy-derived) |" in table_row
    with open(sweep / "results.csv", newline="") as handle:
        parsed = {line["method"]: line for line in csv.DictReader(handle)}
    assert float(parsed["rl λ=0.1"]["minus_shuffled_AP_mean"]) == pytest.approx(0.03)
    assert parsed["rl λ=0.3"]["minus_shuffled_AP_mean"] == ""
    assert float(parsed["rl λ=0.1"]["minus_random-subsets_AP_mean"]) == pytest.approx(-0.01)
    assert parsed["rl λ=0.1 shuffled"]["control_kind"] == "policy-derived"
