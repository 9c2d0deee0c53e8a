"""A KD training step updates the student only, distils exactly the selected (sample, level) pairs."""

from __future__ import annotations

import copy

import torch

from rlpkd.config import DistillConfig
from rlpkd.distill.objective import DistillationObjective
from rlpkd.levels import LEVELS
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.training.kd_step import kd_training_step, student_forward
from tests.conftest import two_box_batch


def _objective(loss="mse", **overrides):
    settings = DistillConfig(loss=loss, **overrides)
    return DistillationObjective(settings, student_channels=16, teacher_channels=32, num_classes=3)


def test_teacher_is_unchanged_and_holds_no_gradients(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    before = copy.deepcopy(teacher.state_dict())
    objective = _objective()
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.1)
    kd_training_step(
        tiny_student, teacher, objective, optimizer, two_box_batch(), torch.ones(2, 4, dtype=bool)
    )
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_student.parameters())


def test_only_selected_pairs_have_kd_loss(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    objective = _objective()
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.0)
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    terms = kd_training_step(tiny_student, teacher, objective, optimizer, two_box_batch(), mask)
    assert torch.all(terms.kd_raw[~mask] == 0)
    assert torch.all(terms.kd_raw[mask] > 0)


def test_kd_adapter_of_an_unselected_level_gets_no_gradient(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    objective = _objective()
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.0)
    mask = torch.tensor([[False, True, False, False], [False, True, False, False]])
    kd_training_step(tiny_student, teacher, objective, optimizer, two_box_batch(), mask)
    adapters = dict(objective.kd.named_parameters())
    for name, param in adapters.items():
        selected = "P3" in name
        has_grad = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert has_grad == selected, name


def test_gradnorm_objective_trains_and_keeps_weights_normalised(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    objective = _objective("pkd", gradnorm=True)
    optimizer = torch.optim.SGD([*tiny_student.parameters(), *objective.kd.parameters()], lr=0.01)
    mask = torch.tensor([[True, True, False, False], [False, True, True, False]])
    for _ in range(3):
        terms = kd_training_step(tiny_student, teacher, objective, optimizer, two_box_batch(), mask)
    weights = terms.level_weights
    assert weights.shape == (1 + len(LEVELS),)
    assert torch.isclose(weights.sum(), torch.tensor(5.0), atol=1e-4)
    assert weights[LEVELS.index("P5") + 1] == 1.0  # never active: untouched


def test_a_step_on_a_given_forward_equals_the_step_that_runs_it(tiny_teacher, tiny_student):
    """The policy-guided path (forward first, choose from its features, finish the step) trains
    exactly as the plain step with the same mask."""
    teacher = freeze_teacher(tiny_teacher)
    batch, mask = (
        two_box_batch(),
        torch.tensor([[True, False, True, False], [False, True, False, True]]),
    )
    results = []
    for given_forward in (False, True):
        student = copy.deepcopy(tiny_student)
        torch.manual_seed(0)
        objective = _objective()
        optimizer = torch.optim.SGD([*student.parameters(), *objective.kd.parameters()], lr=0.1)
        output = student_forward(student, batch) if given_forward else None
        terms = kd_training_step(student, teacher, objective, optimizer, batch, mask, output=output)
        results.append((student.state_dict(), terms.kd_raw.detach()))
    (plain, plain_kd), (guided, guided_kd) = results
    assert torch.equal(plain_kd, guided_kd)
    for name, value in plain.items():
        assert torch.equal(value, guided[name]), name
