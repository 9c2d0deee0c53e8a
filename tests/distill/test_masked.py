"""Masked per-sample, per-level KD: absent levels cost nothing, samples are independent."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rlpkd.distill.losses import LevelKDLoss, build_kd_loss
from rlpkd.distill.masked import (
    level_mask_from_pyramid,
    masked_kd_losses,
    per_level_kd_loss,
    reduce_kd_loss,
)
from rlpkd.levels import LEVEL_STRIDES, LEVELS
from rlpkd.models.lazy_pyramid import LevelFeatures, TeacherPyramid

B, C_S, C_T, K, IMAGE = 3, 4, 6, 3, 32
NAMES = ["fgd", "kl", "mse", "pkd"]


def _sizes(level: str) -> tuple[int, int]:
    return IMAGE // LEVEL_STRIDES[level], IMAGE // LEVEL_STRIDES[level]


def _student(requires_grad: bool = True) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    features = {
        level: torch.randn(B, C_S, *_sizes(level), requires_grad=requires_grad) for level in LEVELS
    }
    logits = {
        level: torch.randn(B, K, *_sizes(level), requires_grad=requires_grad) for level in LEVELS
    }
    return features, logits


def _full_teacher() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    features = {level: torch.randn(B, C_T, *_sizes(level)) for level in LEVELS}
    logits = {level: torch.randn(B, K, *_sizes(level)) for level in LEVELS}
    return features, logits


def _lazy(selection: dict[str, list[int]], full: tuple[dict, dict]) -> TeacherPyramid:
    """What the lazy teacher would return for a per-level list of selecting samples."""
    features, logits = full
    pyramid: TeacherPyramid = {}
    for level, rows in selection.items():
        index = torch.tensor(rows, dtype=torch.long)
        pyramid[level] = LevelFeatures(index, features[level][index], logits[level][index])
    return pyramid


def _boxes() -> tuple[Tensor, Tensor]:
    boxes = torch.tensor(
        [
            [[2.0, 2.0, 20.0, 14.0], [0.0, 0.0, 0.0, 0.0]],
            [[8.0, 4.0, 30.0, 30.0], [1.0, 1.0, 6.0, 6.0]],
            [[0.0, 0.0, 31.0, 31.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[0, -1], [1, 2], [2, -1]])
    return boxes, labels


@pytest.mark.parametrize("name", NAMES)
def test_absent_entries_are_exact_zeros_and_unselected_samples_get_no_gradient(name: str) -> None:
    torch.manual_seed(0)
    kd = build_kd_loss(name, C_S, C_T, K)
    features, logits = _student()
    # Sample 0 selects P2 and P4, sample 1 selects P4, sample 2 selects nothing; P3, P5 absent.
    teacher = _lazy({"P2": [0], "P4": [1, 0]}, _full_teacher())
    boxes, labels = _boxes()
    losses = masked_kd_losses(kd, features, logits, teacher, boxes, labels, B)
    mask = level_mask_from_pyramid(teacher, B)

    expected_mask = torch.tensor(
        [[True, False, True, False], [False, False, True, False], [False, False, False, False]]
    )
    assert torch.equal(mask, expected_mask)
    assert losses.shape == (B, 4)
    assert (losses[~mask] == 0.0).all()
    assert (losses[mask] > 0.0).all()

    reduce_kd_loss(losses, mask).backward()
    inputs = logits if kd.needs_teacher_logits else features
    grads = {level: _grad_or_zeros(inputs[level]) for level in LEVELS}
    for level in LEVELS:
        assert torch.count_nonzero(grads[level][2]) == 0
    assert inputs["P3"].grad is None and inputs["P5"].grad is None
    assert torch.count_nonzero(grads["P2"][1]) == 0
    assert grads["P2"][0].abs().sum() > 0
    assert grads["P4"][0].abs().sum() > 0
    assert grads["P4"][1].abs().sum() > 0


def _grad_or_zeros(tensor: Tensor) -> Tensor:
    return torch.zeros_like(tensor) if tensor.grad is None else tensor.grad


@pytest.mark.parametrize("name", NAMES)
def test_samples_with_different_selections_match_computing_each_alone(name: str) -> None:
    torch.manual_seed(1)
    kd = build_kd_loss(name, C_S, C_T, K)
    features, logits = _student(requires_grad=False)
    full = _full_teacher()
    boxes, labels = _boxes()
    selection = {"P2": [0, 2], "P3": [1], "P5": [2, 1, 0]}
    together = masked_kd_losses(kd, features, logits, _lazy(selection, full), boxes, labels, B)

    for b in range(B):
        alone_selection = {level: [0] for level, rows in selection.items() if b in rows}
        one = slice(b, b + 1)
        full_one = tuple({level: value[one] for level, value in part.items()} for part in full)
        alone = masked_kd_losses(
            kd,
            {level: value[one] for level, value in features.items()},
            {level: value[one] for level, value in logits.items()},
            _lazy(alone_selection, full_one),
            boxes[one],
            labels[one],
            1,
        )
        torch.testing.assert_close(together[b], alone[0], rtol=1e-5, atol=1e-6)


class _RecordingLoss(LevelKDLoss):
    """A loss that records which levels and how many rows it was asked for."""

    def __init__(self) -> None:
        super().__init__(C_S, C_T, K)
        self.calls: list[tuple[str, int]] = []

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        self.calls.append((level, student.shape[0]))
        return student.float().pow(2).mean(dim=(1, 2, 3))

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        return 0.0


def test_absent_levels_cost_nothing() -> None:
    kd = _RecordingLoss()
    features, logits = _student()
    teacher = _lazy({"P3": [2], "P5": [0, 1]}, _full_teacher())
    boxes, labels = _boxes()
    masked_kd_losses(kd, features, logits, teacher, boxes, labels, B)
    assert kd.calls == [("P3", 1), ("P5", 2)]


def test_empty_pyramid_gives_zeros_without_graph() -> None:
    features, logits = _student()
    boxes, labels = _boxes()
    losses = masked_kd_losses(
        build_kd_loss("mse", C_S, C_T, K), features, logits, {}, boxes, labels, B
    )
    assert torch.equal(losses, torch.zeros(B, 4))
    assert not losses.requires_grad
    assert not level_mask_from_pyramid({}, B).any()


def test_kl_without_teacher_logits_is_an_error() -> None:
    features, logits = _student()
    teacher = {"P3": LevelFeatures(torch.tensor([0]), torch.randn(1, C_T, 4, 4))}
    boxes, labels = _boxes()
    with pytest.raises(ValueError, match="class logits"):
        masked_kd_losses(
            build_kd_loss("kl", C_S, C_T, K), features, logits, teacher, boxes, labels, B
        )


def test_reduce_sums_levels_and_averages_batch_ignoring_masked_entries() -> None:
    losses = torch.tensor([[1.0, 2.0, float("nan"), 4.0], [5.0, float("inf"), 7.0, 8.0]])
    losses.requires_grad_(True)
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    total = reduce_kd_loss(losses, mask)
    assert total.item() == pytest.approx((1.0 + 2.0 + 7.0 + 8.0) / 2)
    torch.testing.assert_close(per_level_kd_loss(losses, mask), torch.tensor([0.5, 1.0, 3.5, 4.0]))
    total.backward()
    assert torch.equal(losses.grad, mask.float() / 2)
