"""The benchmark harness runs every step kind and reports FLOPs-consistent numbers (no timing asserts)."""

from __future__ import annotations

import pytest
import torch

from experiments.bench.gradnorm_speed import benchmark_gradnorm
from experiments.bench.kd_step_speed import StepBenchSettings, benchmark_kd_steps
from experiments.bench.rl_step_speed import benchmark_rl_overhead
from experiments.bench.teacher_cache_speed import benchmark_teacher_cache
from rlpkd.config import ModelConfig

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script

TINY = StepBenchSettings(
    ModelConfig(18, 0.25, 32, 1),
    ModelConfig(18, 0.125, 16, 1),
    image_size=64,
    batch_size=2,
    device=torch.device("cpu"),
    steps=1,
    warmup=0,
    num_classes=3,
)
"""A teacher and student small enough to time on a CPU in seconds."""


def test_benchmark_reports_all_step_kinds_with_consistent_flops():
    result = benchmark_kd_steps(TINY)
    names = [t["name"] for t in result["timings"]]
    assert names == ["ours all", "ours P4,P5", "ours none", "torchvision FCOS, all levels"]
    gflops = {t["name"]: t["gflops_per_image"] for t in result["timings"]}
    assert gflops["ours all"] > gflops["ours P4,P5"] > gflops["ours none"] > 0
    assert all(t["images_per_s"] > 0 and t["achieved_tflops"] > 0 for t in result["timings"])
    ratios = result["ratios"]
    assert ratios["speedup_P4P5_vs_all_predicted"] == gflops["ours all"] / gflops["ours P4,P5"]
    assert ratios["speedup_P4P5_vs_all_measured"] > 0


def test_rl_overhead_benchmark_reports_every_step_kind():
    result = benchmark_rl_overhead(TINY, hidden_sizes=(8,))
    for key in ("fixed_all_ms", "fixed_same_mask_ms", "policy_guided_ms", "env_step_ms"):
        assert result[key] > 0
    assert result["env_step_vs_fixed_all"] == result["env_step_ms"] / result["fixed_all_ms"]
    assert 0 <= result["policy_levels_per_sample"] <= 4


def test_gradnorm_benchmark_reports_both_steps_and_their_ratio():
    result = benchmark_gradnorm(TINY)
    assert result["all_levels_ms"] > 0 and result["all_levels_gradnorm_ms"] > 0
    assert result["gradnorm_vs_plain"] == result["all_levels_gradnorm_ms"] / result["all_levels_ms"]


def test_teacher_cache_benchmark_reports_both_steps_and_their_ratio():
    result = benchmark_teacher_cache(TINY)
    assert result["lazy_teacher_ms"] > 0 and result["cached_teacher_ms"] > 0
    assert result["cached_vs_lazy"] == result["cached_teacher_ms"] / result["lazy_teacher_ms"]
