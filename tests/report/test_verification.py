"""Verification controls: the best static subset at the policy's FLOPs; subset-regime information."""

from __future__ import annotations

import math

import pytest

from rlpkd.report.verification import best_static_at_or_below, subset_regime_information


def _row(method: str, ap: float, gflops: float) -> dict:
    return {"method": method, "AP_mean": ap, "kd_gflops_mean": gflops}


def test_best_static_is_the_best_at_no_more_flops() -> None:
    rows = [_row("all", 0.12, 0.6), _row("P5", 0.08, 0.35), _row("P4", 0.09, 0.37)]
    rows.append(_row("rl-policy", 0.2, 0.36))  # not a static method
    assert best_static_at_or_below(rows, ["all", "P5", "P4"], 0.36)["method"] == "P5"
    assert best_static_at_or_below(rows, ["all", "P5", "P4"], 0.4)["method"] == "P4"
    assert best_static_at_or_below(rows, ["all", "P5", "P4"], 0.1) is None


def test_a_subset_a_hair_dearer_than_the_policy_counts_as_at_its_flops() -> None:
    """A policy on all levels except on 0.1% of its decisions is compared with all levels, not
    with the next cheaper subset; a subset 0.5% dearer (the smallest gap between two subsets
    of the default) still is not at its FLOPs."""
    rows = [_row("all", 0.11, 0.614), _row("P3,P4,P5", 0.098, 0.421)]
    assert best_static_at_or_below(rows, ["all", "P3,P4,P5"], 0.614 * 0.99998)["method"] == "all"
    assert best_static_at_or_below(rows, ["all", "P3,P4,P5"], 0.614 / 1.005)["method"] == "P3,P4,P5"
    strict = best_static_at_or_below(rows, ["all", "P3,P4,P5"], 0.614 * 0.99998, tolerance=0.0)
    assert strict["method"] == "P3,P4,P5"


def test_subset_regime_information() -> None:
    per_regime = [{"levels": ["P2"], "regime": "small-only"}] * 10
    per_regime += [{"levels": ["P5"], "regime": "large-only"}] * 10
    result = subset_regime_information(per_regime)
    assert result["mutual_information_bits"] == pytest.approx(1.0)
    assert result["regime_entropy_bits"] == pytest.approx(1.0)
    static = [{"levels": ["P2", "P5"], "regime": r["regime"]} for r in per_regime]
    assert subset_regime_information(static)["mutual_information_bits"] == 0.0
    assert math.isnan(subset_regime_information([{"levels": []}])["mutual_information_bits"])
