"""A student run that finished with the same fingerprint is reused as it is; another one runs."""

from __future__ import annotations

import torch

from rlpkd.data.build import build_datasets
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.rundir import RunDirectory, read_json
from rlpkd.training.level_selection import FixedLevels
from rlpkd.training.student_phase import StudentRunInputs, run_or_reuse_student


def test_a_finished_student_is_reused_and_another_seed_runs(tiny_config, tmp_path, capsys):
    datasets = build_datasets(tiny_config.data, progress=False)
    teacher = freeze_teacher(build_teacher(tiny_config, datasets.num_classes))
    flops = flops_model_from_config(tiny_config, datasets.num_classes)
    inputs = StudentRunInputs(tiny_config, datasets, teacher, flops, torch.device("cpu"))
    run_dir = RunDirectory(tmp_path / "student")
    selector = FixedLevels(("P3",))

    first = run_or_reuse_student(inputs, selector, 0, run_dir, "[test] P3", method="label")
    metrics_file = run_dir.path / "metrics.json"
    stored = read_json(metrics_file)
    assert first["method"] == stored["method"] == "label" and stored["levels"] == "P3"
    assert stored["student_fingerprint"] == first["student_fingerprint"]
    assert "AP = " in capsys.readouterr().out

    mtime = metrics_file.stat().st_mtime_ns
    again = run_or_reuse_student(inputs, selector, 0, run_dir, "[test] P3", method="label")
    assert again == stored and metrics_file.stat().st_mtime_ns == mtime
    assert "reusing the finished run" in capsys.readouterr().out

    other = run_or_reuse_student(inputs, selector, 1, run_dir, "[test] P3 seed 1")
    assert other["seed"] == read_json(metrics_file)["seed"] == 1
    assert other["student_fingerprint"] != stored["student_fingerprint"]
    assert other["method"] == "P3"
