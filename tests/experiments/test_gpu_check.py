"""The GPU check's parts on the CPU at toy sizes (scripts/gpu_check.py): they run, they measure
what they say, and the goals are judged from the measured numbers."""

from __future__ import annotations

import pytest
import torch

from experiments.gpu_check import (
    CheckSizes,
    check_document,
    dense_matmul_tflops,
    kd_step_parity,
    kd_step_speed,
)

TOY = CheckSizes(matmul_side=64, image_size=64, batch_size=1, steps=1)
CPU = torch.device("cpu")


def test_matmul_rate_is_positive_and_finite():
    rate = dense_matmul_tflops(CPU, TOY.matmul_side, repeats=2)
    assert 0 < rate < 1e3


@pytest.mark.slow
def test_kd_step_speed_reports_ours_and_torchvision_against_the_matmul_rate():
    result = kd_step_speed(CPU, TOY, matmul_tflops=2.0)
    names = [timing["name"] for timing in result["timings"]]
    assert names == ["ours all", "torchvision FCOS, all levels"]
    ours = result["timings"][0]
    assert result["ours_fraction_of_matmul_rate"] == ours["achieved_tflops"] / 2.0
    assert ours["images_per_s"] > 0


@pytest.mark.slow
def test_kd_step_parity_compares_the_same_step_in_both_precisions():
    rows = kd_step_parity(CPU, TOY)
    assert [row["value"] for row in rows] == ["total_loss", "detection_loss", "kd_raw_mean"]
    for row in rows:
        assert row["fp32"] != 0 and abs(row["bf16"] - row["fp32"]) / abs(row["fp32"]) < 0.05
        assert row["agrees"]


def test_goals_follow_the_measured_numbers():
    parts = {
        "kd_step_speed": {"ours_fraction_of_matmul_rate": 0.45},
        "sweep_sharing": {"shared_over_serial": 1.5},
    }
    goals = check_document(TOY, parts)["goals"]
    assert goals["kd_step_fraction_of_matmul_rate"]["met"] is True
    assert goals["sweep_shared_over_serial"]["met"] is False
    assert check_document(TOY, {})["goals"]["sweep_shared_over_serial"]["met"] is None
