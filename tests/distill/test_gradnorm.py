"""GradNormBalancer on a tiny shared linear model with unequal and intermittent tasks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rlpkd.distill.gradnorm import GradNormBalancer

TASKS = ("det", "P2", "P3", "P4")
GAINS = torch.tensor([1.0, 1.0, 1.0, 50.0])  # P4's gradient norm is 50x the others'


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 4))


def _task_losses(model: nn.Module, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=generator)
    out = model(x)
    return torch.stack([GAINS[i] * out[:, i].pow(2).mean() for i in range(len(TASKS))])


def _run(balancer: GradNormBalancer, model: nn.Module, steps: int, active: Tensor) -> list[Tensor]:
    history = []
    for step in range(steps):
        balancer.balance(_task_losses(model, step), active, model[0].weight)
        history.append(balancer.weights)
    return history


def test_weight_of_task_with_far_larger_gradient_norm_decreases() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS)
    history = _run(balancer, model, 10, torch.ones(4, dtype=torch.bool))
    assert history[-1][3] < 0.8
    assert (history[-1][:3] > 1.0).all()
    assert balancer.last_grad_norms[3] > 10 * balancer.last_grad_norms[:3].max()


def test_weights_stay_positive_and_sum_to_number_of_tasks() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS, lr=0.5)
    active = torch.ones(4, dtype=torch.bool)
    for step in range(40):
        active = torch.tensor([True, step % 2 == 0, step % 3 == 0, True])
        balancer.balance(_task_losses(model, step), active, model[0].weight)
        weights = balancer.weights
        assert (weights > 0).all()
        assert weights.sum().item() == pytest.approx(len(TASKS), rel=1e-5)


def test_inactive_task_keeps_its_weight() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS)
    _run(balancer, model, 3, torch.ones(4, dtype=torch.bool))
    before = balancer.weights
    active = torch.tensor([True, True, False, True])
    _run(balancer, model, 5, active)
    after = balancer.weights
    assert after[2].item() == before[2].item()
    assert not torch.equal(after[active], before[active])


def test_model_gradients_stay_none_and_returned_loss_trains_model() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS)
    losses = _task_losses(model, 0)
    active = torch.tensor([True, False, True, True])
    weights = balancer.weights
    total = balancer.balance(losses, active, model[0].weight)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert balancer.task_weights.grad is None
    torch.testing.assert_close(total, (weights[active] * losses[active]).sum())
    total.backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    assert balancer.task_weights.grad is None


def test_running_statistics_not_batch_values_set_training_rates() -> None:
    balancer = GradNormBalancer(("a", "b"), momentum=0.5)
    shared = nn.Parameter(torch.ones(3))
    balancer.balance(
        torch.stack([shared.sum(), shared.sum() * 0]), torch.tensor([True, False]), shared
    )
    assert balancer.initial_loss.tolist() == [3.0, 0.0]
    balancer.balance(
        torch.stack([shared.sum() * 3, shared.sum() * 2]), torch.tensor([True, True]), shared
    )
    # a: EMA 0.5*3 + 0.5*9 = 6; b: first activity sets L(0) = running = 6.
    assert balancer.running_loss.tolist() == [6.0, 6.0]
    assert balancer.initial_loss.tolist() == [3.0, 6.0]
    assert balancer.seen.tolist() == [True, True]


def test_no_active_task_returns_zero_and_changes_nothing() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS)
    total = balancer.balance(
        _task_losses(model, 0), torch.zeros(4, dtype=torch.bool), model[0].weight
    )
    assert total.item() == 0.0
    assert torch.equal(balancer.weights, torch.ones(4))
    assert not balancer.seen.any()


def test_state_dict_round_trip_continues_identically() -> None:
    model = _model()
    balancer = GradNormBalancer(TASKS)
    active = torch.ones(4, dtype=torch.bool)
    _run(balancer, model, 3, active)
    restored = GradNormBalancer(TASKS)
    restored.load_state_dict(balancer.state_dict())
    _run(balancer, model, 2, active)
    _run(restored, model, 2, active)
    torch.testing.assert_close(restored.weights, balancer.weights)
    torch.testing.assert_close(restored.running_loss, balancer.running_loss)
