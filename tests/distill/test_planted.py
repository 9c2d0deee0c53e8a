"""The planted rule: teacher targets corrupted at exactly the planted (sample, level) pairs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlpkd.config import DistillConfig
from rlpkd.distill.losses import build_kd_loss
from rlpkd.distill.objective import DistillationObjective
from rlpkd.distill.planted import PlantedCorruptionKD, planted_pairs, planted_samples
from rlpkd.errors import ConfigError

NUM_CLASSES = 4
BOXES = torch.tensor([[[4.0, 4.0, 40.0, 30.0], [20.0, 8.0, 60.0, 60.0]]] * 3)
LABELS = torch.tensor([[2, -1], [0, 1], [1, 2]])  # samples 0 and 2 hold class 2


def test_planted_pairs_mark_the_planted_levels_of_images_with_the_class() -> None:
    assert planted_samples(LABELS, 2).tolist() == [True, False, True]
    pairs = planted_pairs(LABELS, 2, ("P2", "P3"))
    assert pairs.tolist() == [
        [True, True, False, False],
        [False, False, False, False],
        [True, True, False, False],
    ]
    assert not planted_pairs(LABELS, 3, ("P2",)).any()


@pytest.mark.parametrize("name", ["pkd", "mse", "fgd"])
@pytest.mark.parametrize("corruption", ["rotate", "negate"])
def test_only_planted_pairs_see_the_corrupted_target(name: str, corruption: str) -> None:
    torch.manual_seed(0)
    base = build_kd_loss(name, 8, 12, NUM_CLASSES)
    planted = PlantedCorruptionKD(base, 2, ("P3",), corruption)
    student, teacher = torch.randn(3, 8, 16, 16), torch.randn(3, 12, 16, 16)
    rotated = torch.flip(teacher, dims=(-2, -1)) if corruption == "rotate" else -teacher
    clean = base.level_loss("P3", student, teacher, BOXES, LABELS)
    corrupted = base.level_loss("P3", student, rotated, BOXES, LABELS)
    got = planted.level_loss("P3", student, teacher, BOXES, LABELS)
    torch.testing.assert_close(got, torch.stack([corrupted[0], clean[1], corrupted[2]]))
    assert not torch.allclose(got[0], clean[0])  # the corruption changes a planted sample's loss
    # an unplanted level is the base loss for every sample
    torch.testing.assert_close(
        planted.level_loss("P4", student, teacher, BOXES, LABELS),
        base.level_loss("P4", student, teacher, BOXES, LABELS),
    )


def test_objective_builds_the_planted_loss_only_when_asked() -> None:
    settings = DistillConfig()
    assert not isinstance(
        DistillationObjective(settings, 8, 12, NUM_CLASSES).kd, PlantedCorruptionKD
    )
    planted = dataclasses.replace(
        settings, planted_class=1, planted_levels=["P2"], planted_corruption="negate"
    )
    kd = DistillationObjective(planted, 8, 12, NUM_CLASSES).kd
    assert isinstance(kd, PlantedCorruptionKD)
    assert (kd.planted_class, kd.planted_levels, kd.corruption) == (1, ("P2",), "negate")


def test_pkd_on_a_negated_target_is_the_opposite_correlation() -> None:
    """PKD = 1 − r per channel: the negated target turns r into −r, so the loss becomes 2 − L."""
    torch.manual_seed(0)
    base = build_kd_loss("pkd", 12, 12, NUM_CLASSES)
    planted = PlantedCorruptionKD(base, 2, ("P2",), "negate")
    student, teacher = torch.randn(3, 12, 8, 8), torch.randn(3, 12, 8, 8)
    clean = base.level_loss("P2", student, teacher, BOXES, LABELS)
    got = planted.level_loss("P2", student, teacher, BOXES, LABELS)
    torch.testing.assert_close(got[0], 2.0 - clean[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], clean[1])


def test_an_unknown_corruption_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="distill.planted_corruption='blur'"):
        PlantedCorruptionKD(build_kd_loss("pkd", 8, 8, NUM_CLASSES), 2, ("P2",), "blur")


def test_a_class_the_dataset_lacks_is_a_config_error() -> None:
    settings = dataclasses.replace(DistillConfig(), planted_class=NUM_CLASSES)
    with pytest.raises(ConfigError, match="distill.planted_class=4 is not a class index"):
        DistillationObjective(settings, 8, 12, NUM_CLASSES)
