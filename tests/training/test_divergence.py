"""A non-finite loss stops training with one line naming the phase, step and term, before any
weight is updated with it, and leaves earlier results intact; a bad student resume file is one
line too."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from rlpkd.config import DistillConfig
from rlpkd.data.build import build_datasets
from rlpkd.distill.objective import DistillationObjective
from rlpkd.errors import CheckpointError, DivergenceError
from rlpkd.levels import LEVELS
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.training.detector_training import train_detector
from rlpkd.training.kd_step import GRADIENT_NORM, kd_training_step, raise_if_diverged
from rlpkd.training.level_selection import FixedLevels
from tests.conftest import (
    distil_on_cpu,
    run_script,
    tiny_distillation_inputs,
    tiny_overrides,
    two_box_batch,
)
from tests.dir_snapshot import directory_snapshot

KD_TERMS = {"detection", "total", GRADIENT_NORM, *(f"kd_{level}" for level in LEVELS)}


def _with_schedule(config, name, **changes):
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **changes)}
    )


def _distill(config, checkpoint_path=None, on_step=None):
    datasets, teacher, flops = tiny_distillation_inputs(config)
    return distil_on_cpu(
        config,
        datasets,
        teacher,
        FixedLevels(LEVELS),
        flops,
        on_step=on_step,
        checkpoint_path=checkpoint_path,
    )


def test_student_with_a_huge_learning_rate_stops_naming_phase_step_and_term(tiny_config):
    config = _with_schedule(tiny_config, "student_schedule", lr=1_000_000.0)
    finished_steps: list[int] = []
    with pytest.raises(DivergenceError) as caught:
        _distill(config, on_step=lambda step, *_: finished_steps.append(step))
    error = caught.value
    assert error.phase == "student all seed 0"
    assert error.term in KD_TERMS and not math.isfinite(error.value)
    # the first step is finite (fresh weights); the diverged step is the one after the last update
    assert error.step == finished_steps[-1] + 1 >= 2
    message = str(error)
    assert "\n" not in message
    assert f"student all seed 0 at step {error.step}: loss term '{error.term}'" in message


def test_teacher_with_a_huge_learning_rate_stops_naming_phase_step_and_term(tiny_config):
    config = _with_schedule(tiny_config, "teacher_schedule", lr=1_000_000.0)
    datasets = build_datasets(config.data, progress=False)
    torch.manual_seed(0)
    teacher = build_teacher(config, datasets.num_classes)
    with pytest.raises(DivergenceError) as caught:
        train_detector(
            teacher,
            datasets.train,
            config.teacher_schedule,
            torch.device("cpu"),
            seed=0,
            progress=False,
        )
    error = caught.value
    assert error.phase == "teacher"
    assert error.term in {"detection", "total", GRADIENT_NORM}
    assert error.step >= 2 and not math.isfinite(error.value)
    assert str(error).startswith(f"training diverged in teacher at step {error.step}")
    # the update of the diverged step never happened: every weight is still finite
    assert all(torch.isfinite(p).all() for p in teacher.parameters())


@pytest.mark.parametrize("loss", ["pkd", "mse"])
def test_a_nan_box_stops_the_kd_step_before_the_update(tiny_teacher, tiny_student, loss):
    teacher = freeze_teacher(tiny_teacher)
    objective = DistillationObjective(DistillConfig(loss=loss), 16, 32, 3)
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.1)
    before = copy.deepcopy(dict(tiny_student.named_parameters()))
    adapters = copy.deepcopy(dict(objective.kd.named_parameters()))
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(DivergenceError) as caught:
        kd_training_step(
            tiny_student, teacher, objective, optimizer, two_box_batch(nan_box=True), mask, 10.0,
            phase="student P2,P3 seed 4", step=7,
        )  # fmt: skip
    error = caught.value
    assert (error.phase, error.step, error.term) == ("student P2,P3 seed 4", 7, "detection")
    assert math.isnan(error.value)
    for name, value in tiny_student.named_parameters():
        assert torch.equal(value, before[name]), name  # not updated with NaN
    for name, value in objective.kd.named_parameters():
        assert torch.equal(value, adapters[name]), name
    assert all(torch.isfinite(b).all() for b in tiny_student.buffers())  # BN saw finite images
    # the same batch without the NaN box trains
    batch = two_box_batch()
    terms = kd_training_step(tiny_student, teacher, objective, optimizer, batch, mask, 10.0)
    assert torch.isfinite(terms.total)


def test_a_finite_loss_with_a_non_finite_gradient_norm_is_divergence():
    with pytest.raises(DivergenceError, match="'gradient norm' is inf"):
        raise_if_diverged(torch.tensor(1.5), torch.tensor(math.inf), "teacher", 3)
    raise_if_diverged(torch.tensor(1.5), torch.tensor(2.0), "teacher", 3)  # finite: no error


def test_gradnorm_weights_that_turned_nan_are_named(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    objective = DistillationObjective(DistillConfig(loss="pkd", gradnorm=True), 16, 32, 3)
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.0)
    with torch.no_grad():
        objective.balancer.task_weights[2] = math.nan  # P3; renormalising spreads it
    batch, mask = two_box_batch(), torch.ones(2, 4, dtype=bool)
    with pytest.raises(DivergenceError, match="loss term .gradnorm_weight_"):
        kd_training_step(tiny_student, teacher, objective, optimizer, batch, mask)


def _write_resume_file(config, path):
    """A real resume file: an interrupted 2-epoch run saves one after its first epoch."""

    class Interrupt(Exception):
        pass

    def stop_in_second_epoch(step, *_):
        if step == 4:  # 24 images / batch 8 = 3 steps per epoch: the second epoch
            raise Interrupt

    two_epochs = _with_schedule(config, "student_schedule", epochs=2)
    with pytest.raises(Interrupt):
        _distill(two_epochs, path, on_step=stop_in_second_epoch)
    assert path.is_file()
    return two_epochs


def test_a_truncated_student_resume_file_is_one_line_naming_it(tiny_config, tmp_path):
    path = tmp_path / "checkpoints" / "student_resume_abc.pt"
    config = _write_resume_file(tiny_config, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        _distill(config, path)
    message = str(caught.value)
    assert "\n" not in message and "student resume file" in message
    assert str(path) in message and "delete it" in message


def test_a_resume_file_of_another_architecture_is_one_line(tiny_config, tmp_path):
    path = tmp_path / "student_resume_abc.pt"
    _write_resume_file(tiny_config, path)
    wider = dataclasses.replace(
        tiny_config, student=dataclasses.replace(tiny_config.student, fpn_channels=8)
    )
    with pytest.raises(CheckpointError, match="does not fit this run.*delete it"):
        _distill(_with_schedule(wider, "student_schedule", epochs=2), path)
    torch.save({"student": {}}, path)  # foreign: not a resume file
    with pytest.raises(CheckpointError, match="lacks"):
        _distill(tiny_config, path)


def _distill_cli(data_root, out, *extra):
    sets = [arg for override in (*tiny_overrides(data_root), *extra) for arg in ("--set", override)]
    return run_script("scripts/distill.py", "--debug", "--out", str(out), "--levels", "all", *sets)


@pytest.mark.slow
def test_distill_cli_divergence_exits_2_with_one_line_and_keeps_the_old_run(
    tiny_data_root, tmp_path
):
    out = tmp_path / "run"
    first = _distill_cli(tiny_data_root, out)
    assert first.returncode == 0, first.stderr
    before = directory_snapshot(out)

    result = _distill_cli(tiny_data_root, out, "student_schedule.lr=1000000.0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: training diverged in student all seed 0 at step ")
    assert "loss term '" in lines[0]

    after = directory_snapshot(out)
    changed = {path for path in before.keys() & after.keys() if before[path] != after[path]}
    removed = before.keys() - after.keys()
    added = after.keys() - before.keys()
    assert not removed
    # what the failed run may touch: a new, empty TensorBoard event file. Never a result, and
    # never config.yaml (written beside the metrics, so it always describes them).
    assert not changed, changed
    assert all(path.startswith("tensorboard/events.") for path in added), added
    for name in ("metrics.json", "predictions.json", "checkpoints/student.pt"):
        assert before[name] == after[name]


def test_an_overflowing_kd_weight_names_the_level_not_just_the_total(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    objective = DistillationObjective(DistillConfig(loss="mse", weight=1.0e39), 16, 32, 3)
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(DivergenceError, match="loss term 'kd_P2' is inf") as caught:
        kd_training_step(tiny_student, teacher, objective, optimizer, two_box_batch(), mask, step=1)
    assert caught.value.step == 1
