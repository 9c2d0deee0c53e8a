"""Level selectors: the scale rule picks exactly the levels each sample's boxes are assigned to;
each selector has exactly the optional capabilities (protocols) it implements."""

from __future__ import annotations

import pytest
import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.training.level_selection import (
    FingerprintedSelector,
    FixedLevels,
    RandomLevels,
    ScaleRuleLevels,
    StatefulSelector,
    StudentObservingSelector,
    parse_level_spec,
)
from rlpkd.training.student_phase import selector_from_spec, selector_key

THRESHOLDS = (8.0, 16.0, 32.0)  # half-extent boundaries: side < 16 px -> P2, < 32 -> P3, < 64 -> P4


def _batch(boxes: list[list[list[float]]]) -> DetectionBatch:
    width = max(len(b) for b in boxes)
    padded = torch.zeros(len(boxes), width, 4)
    labels = torch.full((len(boxes), width), -1, dtype=torch.long)
    for i, sample in enumerate(boxes):
        if sample:
            padded[i, : len(sample)] = torch.tensor(sample)
            labels[i, : len(sample)] = 0
    n = len(boxes)
    return DetectionBatch(
        torch.zeros(n, 3, 128, 128), padded, labels, torch.arange(n), torch.ones(n)
    )


def test_scale_rule_selects_the_levels_of_each_samples_boxes():
    batch = _batch(
        [
            [[0, 0, 10, 10]],  # side 10 -> P2
            [[0, 0, 20, 12], [0, 0, 100, 40]],  # side 20 -> P3, side 100 -> P5
            [],  # no boxes -> nothing to distil
            [[0, 0, 40, 40], [5, 5, 45, 45]],  # two P4 boxes
        ]
    )
    mask = ScaleRuleLevels(THRESHOLDS).select(batch, 0.0)
    expected = torch.tensor(
        [
            [True, False, False, False],
            [False, True, False, True],
            [False, False, False, False],
            [False, False, True, False],
        ]
    )
    assert torch.equal(mask, expected)


def test_padding_rows_never_select_a_level():
    batch = _batch([[[0, 0, 10, 10]], [[0, 0, 100, 100], [0, 0, 100, 100]]])
    mask = ScaleRuleLevels(THRESHOLDS).select(batch, 0.0)
    # sample 0's padding row is a zero box (it would map to P2) but its label is -1
    assert torch.equal(mask[0], torch.tensor([True, False, False, False]))


def test_scale_rule_spec(tiny_config):
    assert parse_level_spec("scale-rule") == ("scale-rule", None)
    flops = flops_model_from_config(tiny_config)
    selector = selector_from_spec("scale-rule", flops, 0, tiny_config.data.level_thresholds)
    assert isinstance(selector, ScaleRuleLevels) and selector.name == "scale-rule"
    with pytest.raises(ValueError, match="thresholds"):
        selector_from_spec("scale-rule", flops, 0)


def test_each_selector_has_only_the_capabilities_it_implements():
    fixed, scale = FixedLevels(("P2", "P4")), ScaleRuleLevels(THRESHOLDS)
    random = RandomLevels(0.5, 0.25, seed=0)
    assert [isinstance(s, StatefulSelector) for s in (fixed, random, scale)] == [False, True, False]
    assert [isinstance(s, FingerprintedSelector) for s in (fixed, random, scale)] == [
        False,
        False,
        True,
    ]
    assert not any(isinstance(s, StudentObservingSelector) for s in (fixed, random, scale))
    assert selector_key(fixed) == "P2,P4" and selector_key(random) == "random:0.25"
    assert selector_key(scale) == "scale-rule:(8.0, 16.0, 32.0)"
