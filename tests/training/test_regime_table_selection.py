"""The regime-table selector gives each image its regime's subset, whatever the batch order."""

from __future__ import annotations

import pytest
import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.levels import levels_to_mask
from rlpkd.training.regime_table_selection import RegimeTableLevels
from rlpkd.training.student_phase import selector_key

TABLE = {"small-only": ("P2", "P3"), "medium-only": ("P4",), "large-only": ()}
REGIMES = {1: "small-only", 2: "large-only", 3: "medium-only", 4: "small-only", 7: "large-only"}


def _batch(image_ids: list[int]) -> DetectionBatch:
    n = len(image_ids)
    return DetectionBatch(
        images=torch.zeros(n, 3, 8, 8),
        boxes=torch.zeros(n, 1, 4),
        labels=torch.full((n, 1), -1),
        image_ids=torch.tensor(image_ids),
        scales=torch.ones(n),
    )


def test_each_image_gets_its_regimes_subset() -> None:
    selector = RegimeTableLevels(TABLE, REGIMES, name="oracle")
    ids = [7, 1, 3, 4, 2]
    mask = selector.select(_batch(ids), progress=0.3)
    assert mask.dtype == torch.bool and mask.shape == (5, 4)
    for row, image_id in zip(mask, ids, strict=True):
        assert torch.equal(row, levels_to_mask(TABLE[REGIMES[image_id]]))
    assert selector.name == "oracle"


def test_unknown_image_and_missing_regime_fail_clearly() -> None:
    selector = RegimeTableLevels(TABLE, REGIMES)
    with pytest.raises(KeyError, match="image 99"):
        selector.select(_batch([1, 99]), progress=0.0)
    with pytest.raises(ValueError, match="large-only"):
        RegimeTableLevels({"small-only": ("P2",), "medium-only": ("P3",)}, REGIMES)


def test_fingerprint_follows_the_table_and_cost_is_the_image_mean(tiny_config) -> None:
    a = RegimeTableLevels(TABLE, REGIMES)
    b = RegimeTableLevels({**TABLE, "large-only": ("P5",)}, REGIMES)
    assert selector_key(a) != selector_key(b)
    assert selector_key(a) == selector_key(
        RegimeTableLevels(dict(reversed(TABLE.items())), REGIMES)
    )
    flops = flops_model_from_config(tiny_config)
    expected = (2 * flops.kd_gflops(("P2", "P3")) + flops.kd_gflops(("P4",))) / 5
    assert a.mean_kd_gflops(flops) == pytest.approx(expected)
