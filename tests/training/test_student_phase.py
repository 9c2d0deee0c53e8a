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
    assert "[test] P3: AP = " in capsys.readouterr().out  # the line names its student

    mtime = metrics_file.stat().st_mtime_ns
    again = run_or_reuse_student(inputs, selector, 0, run_dir, "[test] P3", method="label")
    assert again == stored and metrics_file.stat().st_mtime_ns == mtime
    assert "[test] P3: reusing the finished run" in capsys.readouterr().out

    other = run_or_reuse_student(inputs, selector, 1, run_dir, "[test] P3 seed 1")
    assert other["seed"] == read_json(metrics_file)["seed"] == 1
    assert other["student_fingerprint"] != stored["student_fingerprint"]
    assert other["method"] == "P3"


def test_with_the_shared_teacher_cache_a_student_does_not_depend_on_what_ran_before(
    tiny_config, tmp_path
):
    import dataclasses

    from rlpkd.levels import LEVELS
    from rlpkd.training.student_phase import run_student

    config = dataclasses.replace(
        tiny_config, runtime=dataclasses.replace(tiny_config.runtime, teacher_cache_gb=0.5)
    )
    datasets = build_datasets(config.data, progress=False)
    teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    flops = flops_model_from_config(config, datasets.num_classes)
    results, hits = [], []
    for run, history in enumerate(([], [("P2", "P3"), LEVELS])):  # fresh; filled by others
        inputs = StudentRunInputs(config, datasets, teacher, flops, torch.device("cpu"))
        for index, levels in enumerate(history):
            run_student(inputs, FixedLevels(levels), 1, RunDirectory(tmp_path / f"h{index}"))
        folder = tmp_path / f"s{run}"
        metrics = run_student(inputs, FixedLevels(("P3", "P4")), 0, RunDirectory(folder))
        weights = torch.load(folder / "checkpoints" / "student.pt")["model"]
        results.append((metrics["AP"], weights))
        assert inputs.teacher_cache is not None
        hits.append(inputs.teacher_cache.hits)
    assert hits[1] > hits[0]  # the second student was answered from what the others left
    (ap_fresh, fresh), (ap_after, after) = results
    assert ap_fresh == ap_after
    assert all(torch.equal(fresh[name], after[name]) for name in fresh)
