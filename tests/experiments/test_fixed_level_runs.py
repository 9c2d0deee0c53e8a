"""End to end on a tiny config: counted KD FLOPs follow the FLOPs model; the run dir is complete."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from experiments.fixed_level_comparison import run_fixed_level_comparison
from rlpkd.levels import mask_to_levels
from rlpkd.training.level_selection import RandomLevels
from tests.conftest import distil_on_cpu, tiny_distillation_inputs

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


class RecordingSelector(RandomLevels):
    def __init__(self):
        super().__init__(probability=0.5, fraction=0.5, seed=0)
        self.masks = []

    def select(self, batch, progress):
        mask = super().select(batch, progress)
        self.masks.append(mask)
        return mask


def test_counted_kd_flops_equal_the_flops_model_of_the_chosen_subsets(tiny_config):
    datasets, teacher, flops = tiny_distillation_inputs(tiny_config)
    selector = RecordingSelector()
    _, _, stats = distil_on_cpu(tiny_config, datasets, teacher, selector, flops)
    masks = torch.cat(selector.masks)
    expected = sum(flops.kd_flops(mask_to_levels(row)) for row in masks)
    assert stats.images == len(masks)
    assert abs(stats.kd_flops - expected) <= 1e-6 * expected
    assert stats.level_counts == masks.sum(0).tolist()


def test_fixed_level_comparison_writes_the_run_directory_contract(tiny_config):
    report = run_fixed_level_comparison(tiny_config)
    out = tiny_config.runtime.out
    from pathlib import Path

    out = Path(out)
    assert (out / "config.yaml").is_file() and yaml.safe_load((out / "config.yaml").read_text())
    assert (out / "checkpoints" / "teacher.pt").is_file()
    assert {row["method"] for row in report["methods"]} == {"none", "all"}
    for name in ("none-seed0", "all-seed0"):
        run = out / "students" / name
        metrics = json.loads((run / "metrics.json").read_text())
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "kd_gflops"):
            assert key in metrics
        assert metrics["student_train_gflops"] > 0 and metrics["wall_time_s"] > 0
        assert isinstance(json.loads((run / "predictions.json").read_text()), list)
        assert list((run / "tensorboard").iterdir())
        assert (run / "checkpoints" / "student.pt").is_file()
    none = json.loads((out / "students" / "none-seed0" / "metrics.json").read_text())
    all_levels = json.loads((out / "students" / "all-seed0" / "metrics.json").read_text())
    assert none["kd_gflops"] == 0.0 and all_levels["kd_gflops"] > 0
    assert (out / "report.md").read_text().count("|") > 10
    # a second invocation reuses the teacher and the finished students
    teacher_mtime = (out / "checkpoints" / "teacher.pt").stat().st_mtime
    run_fixed_level_comparison(tiny_config)
    assert (out / "checkpoints" / "teacher.pt").stat().st_mtime == teacher_mtime
