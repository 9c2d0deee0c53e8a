"""Mutual information: independent labels give 0, a copy gives the entropy."""

from __future__ import annotations

import math

import pytest

from rlpkd.report.mutual_information import mutual_information_bits


def test_independent_and_identical_labels() -> None:
    regimes = ["small", "large"] * 50
    assert mutual_information_bits(["P2"] * 100, regimes) == 0.0  # one static choice
    assert mutual_information_bits(regimes, regimes) == pytest.approx(1.0)  # a copy: H = 1 bit
    crossed = [(a, b) for a in "xy" for b in "uv"] * 10
    xs, ys = [a for a, _ in crossed], [b for _, b in crossed]
    assert mutual_information_bits(xs, ys) == pytest.approx(0.0, abs=1e-12)


def test_partial_dependence_matches_the_formula() -> None:
    xs = ["a", "a", "a", "b"]
    ys = ["u", "u", "v", "v"]
    # p(a,u)=1/2, p(a,v)=1/4, p(b,v)=1/4; p(a)=3/4, p(b)=1/4, p(u)=p(v)=1/2
    expected = 0.5 * math.log2(0.5 / (0.75 * 0.5)) + 0.25 * math.log2(0.25 / (0.75 * 0.5))
    expected += 0.25 * math.log2(0.25 / (0.25 * 0.5))
    assert mutual_information_bits(xs, ys) == pytest.approx(expected)
    with pytest.raises(ValueError):
        mutual_information_bits(["a"], [])
