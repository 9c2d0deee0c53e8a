"""Properties of the per-level KD losses: shapes, zeros, invariances, FLOPs, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rlpkd.distill.losses import (
    FGDLoss,
    LevelKDLoss,
    build_kd_loss,
    fgd_foreground_mask,
    list_kd_losses,
)
from rlpkd.errors import ConfigError

NAMES = ["fgd", "kl", "mse", "pkd"]
NUM_CLASSES = 5


def _inputs(
    kd: LevelKDLoss, n: int, height: int, width: int, student_channels: int, teacher_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if kd.needs_teacher_logits:
        return torch.randn(n, NUM_CLASSES, height, width), torch.randn(
            n, NUM_CLASSES, height, width
        )
    return (
        torch.randn(n, student_channels, height, width),
        torch.randn(n, teacher_channels, height, width),
    )


def _boxes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0], [20.0, 8.0, 60.0, 60.0], [0, 0, 0, 0]]] * n)
    labels = torch.tensor([[1, 3, -1]] * n)
    return boxes, labels


def _identity_adapters(kd: nn.Module) -> None:
    with torch.no_grad():
        for conv in kd.adapters.values():
            conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
            conv.bias.zero_()


def test_registry_lists_all_losses() -> None:
    assert list_kd_losses() == NAMES
    assert list_kd_losses("p*") == ["pkd"]


def test_unknown_loss_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as error:
        build_kd_loss("nope", 8, 8, NUM_CLASSES)
    for name in NAMES:
        assert name in str(error.value)


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        build_kd_loss("kl", 8, 8, NUM_CLASSES, temprature=3.0)


def test_only_kl_needs_teacher_logits() -> None:
    needs = {name: build_kd_loss(name, 8, 8, NUM_CLASSES).needs_teacher_logits for name in NAMES}
    assert needs == {"fgd": False, "kl": True, "mse": False, "pkd": False}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("level", ["P2", "P5"])
def test_loss_is_per_sample_and_non_negative(name: str, level: str) -> None:
    torch.manual_seed(0)
    kd = build_kd_loss(name, 6, 10, NUM_CLASSES)
    student, teacher = _inputs(kd, 3, 7, 9, 6, 10)
    boxes, labels = _boxes(3)
    loss = kd.level_loss(level, student, teacher, boxes, labels)
    assert loss.shape == (3,)
    assert torch.isfinite(loss).all()
    assert (loss >= 0).all()
    assert (loss > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_zero_when_student_equals_teacher(name: str) -> None:
    torch.manual_seed(0)
    kd = build_kd_loss(name, 8, 8, NUM_CLASSES)
    if name == "mse":
        _identity_adapters(kd)
    student, _ = _inputs(kd, 2, 6, 5, 8, 8)
    boxes, labels = _boxes(2)
    loss = kd.level_loss("P3", student, student.clone(), boxes, labels)
    torch.testing.assert_close(loss, torch.zeros(2), atol=1e-5, rtol=0)


def test_mse_identity_adapter_gives_plain_mse() -> None:
    kd = build_kd_loss("mse", 4, 4, NUM_CLASSES)
    _identity_adapters(kd)
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    boxes, labels = _boxes(2)
    expected = (student - teacher).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(kd.level_loss("P4", student, teacher, boxes, labels), expected)


def test_pkd_is_invariant_to_per_channel_affine_teacher() -> None:
    torch.manual_seed(0)
    kd = build_kd_loss("pkd", 6, 6, NUM_CLASSES)
    student, teacher = torch.randn(3, 6, 5, 7), torch.randn(3, 6, 5, 7)
    scale = torch.rand(1, 6, 1, 1) * 10 + 0.1
    shift = torch.randn(1, 6, 1, 1) * 5
    boxes, labels = _boxes(3)
    plain = kd.level_loss("P3", student, teacher, boxes, labels)
    affine = kd.level_loss("P3", student, teacher * scale + shift, boxes, labels)
    torch.testing.assert_close(plain, affine, atol=1e-5, rtol=1e-4)
    assert (plain <= 2.0 + 1e-5).all()


def test_pkd_of_negated_teacher_is_two() -> None:
    kd = build_kd_loss("pkd", 4, 4, NUM_CLASSES)
    student = torch.randn(2, 4, 6, 6)
    boxes, labels = _boxes(2)
    loss = kd.level_loss("P2", student, -student, boxes, labels)
    torch.testing.assert_close(loss, torch.full((2,), 2.0), atol=1e-4, rtol=0)


def test_kl_is_temperature_scaled_kl() -> None:
    kd = build_kd_loss("kl", 8, 8, NUM_CLASSES, temperature=3.0)
    student, teacher = torch.randn(2, NUM_CLASSES, 4, 4), torch.randn(2, NUM_CLASSES, 4, 4)
    boxes, labels = _boxes(2)
    p_t = torch.softmax(teacher / 3.0, dim=1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / 3.0, dim=1))).sum(dim=1)
    expected = kl.mean(dim=(1, 2)) * 9.0
    torch.testing.assert_close(kd.level_loss("P3", student, teacher, boxes, labels), expected)


def test_fgd_foreground_mask_values() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 16.0, 16.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1, -1]])
    mask = fgd_foreground_mask(boxes, labels, stride=4, height=8, width=8)[0]
    # Reference-code extent: floor(x1/s) .. ceil(x2/s) inclusive -> 3x3 and 5x5 cells.
    assert mask[0, 0] == pytest.approx(1 / 9)
    assert mask[3, 3] == pytest.approx(1 / 25)
    assert mask[5, 5] == 0.0
    assert (mask[:5, :5] > 0).all() and mask[5:].sum() == 0


def _fgd_focal_only(alpha: float, beta: float) -> FGDLoss:
    return FGDLoss(
        4, 4, NUM_CLASSES, alpha_fg=alpha, beta_bg=beta, gamma_attention=0.0, lambda_global=0.0
    )


def _fgd_losses_inside_and_outside(kd: FGDLoss) -> tuple[float, float]:
    """``kd``'s P2 loss against an all-ones teacher of a student off by one at one cell inside
    an 8×8 box (cells 0..2 at stride 4), and of one off by one at a cell outside it."""
    teacher = torch.ones(1, 4, 8, 8)
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])
    labels = torch.tensor([[2]])
    inside, outside = teacher.clone(), teacher.clone()
    inside[:, :, 1, 1] += 1.0
    outside[:, :, 6, 6] += 1.0
    return (
        kd.level_loss("P2", inside, teacher, boxes, labels).item(),
        kd.level_loss("P2", outside, teacher, boxes, labels).item(),
    )


def test_fgd_foreground_term_weighs_differences_inside_boxes() -> None:
    inside, outside = _fgd_losses_inside_and_outside(_fgd_focal_only(alpha=1.0, beta=0.0))
    assert outside == 0.0
    assert inside > 0.0


def test_fgd_background_term_weighs_differences_outside_boxes() -> None:
    inside, outside = _fgd_losses_inside_and_outside(_fgd_focal_only(alpha=0.0, beta=1.0))
    assert inside == 0.0
    assert outside > 0.0


def test_fgd_ignores_padding_boxes() -> None:
    kd = _fgd_focal_only(alpha=1.0, beta=0.0)
    teacher = torch.ones(1, 4, 8, 8)
    student = teacher.clone()
    student[:, :, 1, 1] += 1.0
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])
    assert kd.level_loss("P2", student, teacher, boxes, torch.tensor([[-1]])).item() == 0.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [(6, 12), (8, 8)])
@pytest.mark.parametrize(("level", "height", "width"), [("P3", 10, 7), ("P5", 3, 4)])
def test_level_train_flops_matches_flop_counter(
    name: str, channels: tuple[int, int], level: str, height: int, width: int
) -> None:
    torch.manual_seed(0)
    student_channels, teacher_channels = channels
    kd = build_kd_loss(name, student_channels, teacher_channels, NUM_CLASSES)
    n = 3
    student, teacher = _inputs(kd, n, height, width, student_channels, teacher_channels)
    student.requires_grad_(True)
    boxes, labels = _boxes(n)
    with FlopCounterMode(display=False) as counter:
        kd.level_loss(level, student, teacher, boxes, labels).sum().backward()
    counted = counter.get_total_flops()
    predicted = n * kd.level_train_flops(level, height, width)
    assert predicted == pytest.approx(counted, rel=0.02)
    if name in ("fgd", "mse") or (name == "pkd" and student_channels != teacher_channels):
        assert counted > 0


def test_loss_parameters_receive_gradients() -> None:
    kd = build_kd_loss("fgd", 4, 8, NUM_CLASSES)
    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    boxes, labels = _boxes(2)
    kd.level_loss("P3", student, torch.randn(2, 8, 6, 6), boxes, labels).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert kd.adapters["P3"].weight.grad is not None
    assert kd.teacher_context["P3"].conv_mask.weight.grad is not None
    assert kd.student_context["P4"].conv_mask.weight.grad is None


def test_invalid_hyperparameters_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        build_kd_loss("kl", 8, 8, NUM_CLASSES, temperature=0.0)
    with pytest.raises(ConfigError):
        build_kd_loss("fgd", 8, 8, NUM_CLASSES, alpha_fg=-1.0)
    with pytest.raises(ConfigError):
        build_kd_loss("pkd", 8, 8, NUM_CLASSES, eps=0.0)


def test_unknown_level_is_rejected() -> None:
    kd = build_kd_loss("mse", 4, 4, NUM_CLASSES)
    boxes, labels = _boxes(1)
    with pytest.raises(ValueError, match="P6"):
        kd.level_loss("P6", torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), boxes, labels)


def test_fgd_with_default_weights_and_no_background_prefers_inside_differences() -> None:
    inside, outside = _fgd_losses_inside_and_outside(FGDLoss(4, 4, NUM_CLASSES, beta_bg=0.0))
    assert inside > outside
