"""The analytic FLOPs model against torch's FlopCounterMode, and its structural properties."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rlpkd.config import ModelConfig
from rlpkd.distill.losses import LevelKDLoss, build_kd_loss, list_kd_losses
from rlpkd.distill.masked import masked_kd_losses
from rlpkd.flops.analytic import conv2d_flops, conv_output_hw, pool_output_hw
from rlpkd.flops.kd_flops import FlopsModel, level_set_key
from rlpkd.levels import LEVELS, NUM_SUBSETS, all_subsets, index_to_subset, levels_to_mask
from rlpkd.models.detector import PyramidDetector, build_detector
from rlpkd.models.lazy_pyramid import freeze_teacher, lazy_teacher_pyramid

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 6
THRESHOLDS = (8.0, 16.0, 32.0)
TOLERANCE = 0.02
LEVEL_SETS = [("P5",), ("P2",), ("P3", "P5"), LEVELS]

SMALL_TEACHER = ModelConfig(depth=34, width=0.25, fpn_channels=32, head_convs=1)
SMALL_STUDENT = ModelConfig(depth=18, width=0.25, fpn_channels=16, head_convs=1)
BOTTLENECK_TEACHER = ModelConfig(depth=50, width=1.0, fpn_channels=64, head_convs=1)


@pytest.fixture(scope="module")
def detectors() -> dict[str, PyramidDetector]:
    """Frozen teachers (BasicBlock and Bottleneck bodies) and a trainable student, built once."""
    torch.manual_seed(0)
    return {
        "small": freeze_teacher(build_detector(SMALL_TEACHER, NUM_CLASSES, THRESHOLDS)),
        "r50": freeze_teacher(build_detector(BOTTLENECK_TEACHER, NUM_CLASSES, THRESHOLDS)),
        "student": build_detector(SMALL_STUDENT, NUM_CLASSES, THRESHOLDS),
    }


def ground_truth(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per image (class 1), scaled to the image."""
    box = torch.tensor([0.1, 0.15, 0.55, 0.7]) * size
    return box.expand(batch, 1, 4).clone(), torch.ones(batch, 1, dtype=torch.long)


def counted_kd_flops(
    teacher: PyramidDetector,
    student: PyramidDetector,
    kd: LevelKDLoss,
    images: torch.Tensor,
    mask: torch.Tensor,
) -> float:
    """FlopCounterMode's count of the lazy teacher + masked KD losses + their backward."""
    batch = images.shape[0]
    with torch.no_grad():
        shapes = {level: f.shape[-2:] for level, f in student.pyramid(images).items()}
    features = {
        level: torch.randn(batch, kd.student_channels, *hw, requires_grad=True)
        for level, hw in shapes.items()
    }
    logits = {
        level: torch.randn(batch, NUM_CLASSES, *hw, requires_grad=True)
        for level, hw in shapes.items()
    }
    boxes, labels = ground_truth(batch, images.shape[-1])
    with FlopCounterMode(display=False) as counter:
        pyramid = lazy_teacher_pyramid(teacher, images, mask, kd.needs_teacher_logits)
        losses = masked_kd_losses(kd, features, logits, pyramid, boxes, labels, batch)
        if losses.requires_grad:
            losses.sum().backward()
    return float(counter.get_total_flops())


def relative_error(analytic: float, counted: float) -> float:
    return abs(analytic - counted) / counted


# mse (adapter) and kl (teacher class branch) everywhere; every other registered loss once.
KD_CASES = [
    *[("small", 64, name) for name in list_kd_losses()],
    ("small", 96, "mse"),
    ("small", 96, "kl"),
    ("r50", 64, "mse"),
    ("r50", 64, "kl"),
]


@pytest.mark.parametrize("teacher_name, size, loss_name", KD_CASES)
def test_kd_flops_match_flop_counter(
    detectors: dict[str, PyramidDetector], loss_name: str, teacher_name: str, size: int
) -> None:
    teacher, student = detectors[teacher_name], detectors["student"]
    kd = build_kd_loss(loss_name, student.spec.fpn_channels, teacher.spec.fpn_channels, NUM_CLASSES)
    model = FlopsModel(teacher, student, kd, size)
    images = torch.rand(1, 3, size, size)
    for levels in LEVEL_SETS:
        counted = counted_kd_flops(teacher, student, kd, images, levels_to_mask(levels)[None])
        assert relative_error(model.kd_flops(levels), counted) < TOLERANCE, levels


@pytest.mark.parametrize("loss_name", ["mse", "kl"])
def test_kd_flops_of_a_batch_sum_per_sample_costs(
    detectors: dict[str, PyramidDetector], loss_name: str
) -> None:
    """The lazy teacher's cost of a mixed batch is the sum of each sample's kd_flops."""
    teacher, student = detectors["small"], detectors["student"]
    kd = build_kd_loss(loss_name, student.spec.fpn_channels, teacher.spec.fpn_channels, NUM_CLASSES)
    model = FlopsModel(teacher, student, kd, 64)
    per_sample = [("P2",), ("P5",), (), ("P3", "P4")]
    mask = torch.stack([levels_to_mask(levels) for levels in per_sample])
    counted = counted_kd_flops(teacher, student, kd, torch.rand(4, 3, 64, 64), mask)
    expected = sum(model.kd_flops(levels) for levels in per_sample)
    assert relative_error(expected, counted) < TOLERANCE


@pytest.mark.parametrize("size", [64, 96, 100])
def test_student_train_flops_match_flop_counter(
    detectors: dict[str, PyramidDetector], size: int
) -> None:
    """Forward + detection-loss backward per image; 100 px exercises odd feature-map sizes."""
    student = detectors["student"]
    kd = build_kd_loss("mse", student.spec.fpn_channels, 32, NUM_CLASSES)
    model = FlopsModel(detectors["small"], student, kd, size)
    batch = 2
    boxes, labels = ground_truth(batch, size)
    with FlopCounterMode(display=False) as counter:
        output = student(torch.rand(batch, 3, size, size))
        student.detection_loss(output, boxes, labels)["total"].backward()
    student.zero_grad(set_to_none=True)
    counted = counter.get_total_flops() / batch
    assert relative_error(model.student_train_flops(), counted) < TOLERANCE


def test_level_sizes_follow_conv_arithmetic(detectors: dict[str, PyramidDetector]) -> None:
    """At an image size that is not a multiple of 32 the propagated sizes equal the real ones."""
    student = detectors["student"]
    kd = build_kd_loss("mse", student.spec.fpn_channels, 32, NUM_CLASSES)
    model = FlopsModel(detectors["small"], student, kd, 100)
    with torch.no_grad():
        real = {
            level: tuple(f.shape[-2:])
            for level, f in student.pyramid(torch.rand(1, 3, 100, 100)).items()
        }
    assert model.level_hw == real


def test_conv_and_pool_arithmetic() -> None:
    conv = torch.nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=2, dilation=2, groups=2)
    flops, out_hw = conv2d_flops(conv, (15, 20))
    real = conv(torch.zeros(1, 8, 15, 20))
    assert out_hw == conv_output_hw(conv, (15, 20)) == tuple(real.shape[-2:])
    assert flops == 2 * 16 * (8 // 2) * 9 * out_hw[0] * out_hw[1]
    for ceil_mode in (False, True):
        pool = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)
        for hw in [(7, 8), (50, 51), (1, 2)]:
            assert pool_output_hw(pool, hw) == tuple(pool(torch.zeros(1, 1, *hw)).shape[-2:])


@pytest.fixture(scope="module", params=["mse", "kl"])
def flops_model(
    request: pytest.FixtureRequest, detectors: dict[str, PyramidDetector]
) -> FlopsModel:
    teacher, student = detectors["small"], detectors["student"]
    kd = build_kd_loss(
        request.param, student.spec.fpn_channels, teacher.spec.fpn_channels, NUM_CLASSES
    )
    return FlopsModel(teacher, student, kd, 96)


def test_empty_set_is_free_and_p2_costs_more_than_p5(flops_model: FlopsModel) -> None:
    assert flops_model.kd_flops(()) == 0.0
    assert flops_model.kd_flops("none") == 0.0
    assert flops_model.kd_flops(["P2"]) > flops_model.kd_flops(["P5"]) > 0.0


def test_adding_a_level_never_lowers_the_cost(flops_model: FlopsModel) -> None:
    for levels in all_subsets():
        for extra in set(LEVELS) - set(levels):
            assert flops_model.kd_flops([*levels, extra]) > flops_model.kd_flops(levels)


def test_logit_distillation_runs_the_teacher_class_branch(
    detectors: dict[str, PyramidDetector],
) -> None:
    teacher, student = detectors["small"], detectors["student"]
    mse = FlopsModel(teacher, student, build_kd_loss("mse", 16, 32, NUM_CLASSES), 64)
    kl = FlopsModel(teacher, student, build_kd_loss("kl", 16, 32, NUM_CLASSES), 64)
    assert kl.breakdown(["P2"])["teacher_class_branch"] > 0.0
    assert mse.breakdown(["P2"])["teacher_class_branch"] == 0.0


def test_table_fraction_and_level_order(flops_model: FlopsModel) -> None:
    table = flops_model.table()
    assert len(table) == 16 and table["none"] == 0.0
    assert table["P2,P3,P4,P5"] == pytest.approx(flops_model.kd_gflops(LEVELS))
    assert table[level_set_key(("P3", "P5"))] == flops_model.kd_gflops(["P5", "P3"])
    assert flops_model.fraction(LEVELS) == pytest.approx(1.0)
    assert 0.0 < flops_model.fraction(["P5"]) < flops_model.fraction(["P2"]) < 1.0


def test_subset_tables_hold_each_subsets_kd_flops_and_fraction_by_index(
    flops_model: FlopsModel,
) -> None:
    kd_flops, fractions = flops_model.subset_kd_flops(), flops_model.subset_kd_fractions()
    assert kd_flops.shape == fractions.shape == (NUM_SUBSETS,)
    assert kd_flops.dtype == torch.float64 and fractions.dtype == torch.float32
    for index in range(NUM_SUBSETS):
        levels = index_to_subset(index)
        assert kd_flops[index].item() == flops_model.kd_flops(levels)  # exact: float64
        rounded = torch.tensor(flops_model.fraction(levels), dtype=torch.float32)
        assert fractions[index].item() == rounded.item()
    assert fractions[0] == 0.0 and fractions[NUM_SUBSETS - 1] == 1.0
    assert kd_flops[0b0001] > kd_flops[0b1000] > 0.0  # bit 0 is P2, bit 3 is P5
    assert list(flops_model.table().values()) == [f / 1e9 for f in kd_flops.tolist()]


def test_expected_kd_flops_is_exact(flops_model: FlopsModel) -> None:
    probs = [0.1, 0.4, 0.7, 0.25]
    by_hand = 0.0
    for included in itertools.product((0, 1), repeat=4):
        weight = 1.0
        for p, on in zip(probs, included, strict=True):
            weight *= p if on else 1 - p
        chosen = [level for level, on in zip(LEVELS, included, strict=True) if on]
        by_hand += weight * flops_model.kd_flops(chosen)
    assert flops_model.expected_kd_flops(probs) == pytest.approx(by_hand, rel=1e-12)
    assert flops_model.expected_kd_flops([1, 0, 0, 1]) == flops_model.kd_flops(["P2", "P5"])


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
def test_inclusion_prob_reproduces_fraction(flops_model: FlopsModel, fraction: float) -> None:
    p = flops_model.inclusion_prob_for_fraction(fraction)
    assert 0.0 <= p <= 1.0
    expected = flops_model.expected_kd_flops([p] * 4) / flops_model.kd_flops(LEVELS)
    assert expected == pytest.approx(fraction, abs=1e-6)


def load_flops_script() -> ModuleType:
    """scripts/flops.py as a module, so its ``main`` runs in-process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(
        "flops_script", REPO_ROOT / "scripts" / "flops.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_json_and_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    main = load_flops_script().main
    small = [
        "--set",
        "teacher.depth=34",
        "--set",
        "teacher.width=0.25",
        "--set",
        "teacher.fpn_channels=32",
        "--set",
        "student.width=0.25",
        "--set",
        "student.fpn_channels=16",
        "--set",
        "data.image_size=64",
    ]
    assert main([*small, "--levels", "P2,P4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["kd_gflops"]) == {"P2,P4"} and report["kd_gflops"]["P2,P4"] > 0
    assert report["student_train_gflops"] > 0

    assert main([*small, "--levels", "P7"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1

    assert main([*small]) == 0
    table = capsys.readouterr().out
    assert "P2,P3,P4,P5" in table and "student_train_gflops" in table
