"""The unrolled gate gradient (DARTS eq. 7-8) on an analytic gated-distillation problem."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from rlpkd.search.hypergradient import GatedDistillProblem, unrolled_gate_gradient

TrainBatch = tuple[Tensor, Tensor, Tensor]
ValBatch = tuple[Tensor, Tensor]


class LinearKDProblem:
    """A linear student ``y = x . w`` that should learn ``w_true``.

    Its task ("detection") loss sees only a few noisy labels; the KD targets of levels 0-2 are the
    true outputs ``x . w_true`` (a perfect teacher), level 3's are pure noise (one level's KD made
    useless). The validation loss is the squared error to the true outputs on fresh inputs.
    """

    def __init__(self, dim: int = 8, batch: int = 32, labelled: int = 4, seed: int = 0) -> None:
        self.dim, self.batch, self.labelled = dim, batch, labelled
        self.generator = torch.Generator().manual_seed(seed)
        self.w_true = torch.randn(dim, generator=self.generator, dtype=torch.float64)
        self.w = torch.zeros(dim, dtype=torch.float64, requires_grad=True)

    def parameters(self) -> list[Tensor]:
        return [self.w]

    def buffers(self) -> list[Tensor]:
        return []

    @staticmethod
    def train_loss_at(w: Tensor, batch: TrainBatch, gates: Tensor) -> Tensor:
        x, labels, kd_targets = batch
        prediction = x @ w
        task = ((prediction[: len(labels)] - labels) ** 2).mean()
        kd = ((prediction[:, None] - kd_targets) ** 2).mean(dim=0)  # [4]
        return task + (gates * kd).sum()

    @staticmethod
    def val_loss_at(w: Tensor, batch: ValBatch) -> Tensor:
        x, y = batch
        return ((x @ w - y) ** 2).mean()

    def train_loss(self, batch: TrainBatch, gates: Tensor) -> Tensor:
        return self.train_loss_at(self.w, batch, gates)

    def val_loss(self, batch: ValBatch) -> Tensor:
        return self.val_loss_at(self.w, batch)

    def _inputs(self) -> Tensor:
        return torch.randn(self.batch, self.dim, generator=self.generator, dtype=torch.float64)

    def train_batches(self) -> Iterator[TrainBatch]:
        while True:
            x = self._inputs()
            y = x @ self.w_true
            noise = torch.randn(self.labelled, generator=self.generator, dtype=torch.float64)
            labels = y[: self.labelled] + 0.5 * noise
            useless = 2.0 * torch.randn(self.batch, generator=self.generator, dtype=torch.float64)
            yield x, labels, torch.stack([y, y, y, useless], dim=1)

    def val_batches(self) -> Iterator[ValBatch]:
        while True:
            x = self._inputs()
            yield x, x @ self.w_true


def test_linear_problem_is_a_gated_distill_problem():
    problem: GatedDistillProblem = LinearKDProblem()
    assert problem.parameters()[0].requires_grad


def _exact_unrolled_gradient(
    problem: LinearKDProblem, gates: Tensor, train: TrainBatch, val: ValBatch, xi: float
) -> Tensor:
    """d L_val(w - xi grad_w L_train(w, g)) / dg by double backward."""
    gates = gates.clone().requires_grad_(True)
    w = problem.w.detach().clone().requires_grad_(True)
    (step,) = torch.autograd.grad(problem.train_loss_at(w, train, gates), w, create_graph=True)
    (grad,) = torch.autograd.grad(problem.val_loss_at(w - xi * step, val), gates)
    return grad


def _warm_start(problem: LinearKDProblem) -> None:
    with torch.no_grad():
        problem.w.copy_(0.5 * problem.w_true)


def test_unrolled_gradient_matches_the_exact_second_order_value():
    problem = LinearKDProblem()
    _warm_start(problem)
    train, val = next(problem.train_batches()), next(problem.val_batches())
    gates = torch.tensor([0.3, 0.5, 0.7, 0.6], dtype=torch.float64)
    result = unrolled_gate_gradient(problem, gates, train, val, xi=0.05, eps=0.01)
    exact = _exact_unrolled_gradient(problem, gates, train, val, xi=0.05)
    assert exact.abs().min() > 1e-3  # every level's gate matters through the unrolled step
    torch.testing.assert_close(result.gates_grad, exact, rtol=1e-6, atol=1e-9)
    # the useful levels help the validation loss (negative gradient), the noisy one hurts
    assert (result.gates_grad[:3] < 0).all() and result.gates_grad[3] > 0
    w_prime = problem.w - 0.05 * torch.autograd.grad(problem.train_loss(train, gates), problem.w)[0]
    assert result.val_loss == pytest.approx(float(problem.val_loss_at(w_prime.detach(), val)))


def test_weights_are_restored_bit_exactly():
    problem = LinearKDProblem()
    _warm_start(problem)
    before = problem.w.detach().clone()
    train, val = next(problem.train_batches()), next(problem.val_batches())
    unrolled_gate_gradient(problem, torch.full((4,), 0.5, dtype=torch.float64), train, val, 0.1)
    assert torch.equal(problem.w.detach(), before)
    assert problem.w.grad is None  # no gradient left behind on the weights either


def test_first_order_gradient_is_zero_so_the_unrolled_step_is_needed():
    """L_val does not depend on the gates: at fixed w (xi = 0, DARTS's first-order variant) the
    gates get exactly zero gradient, while the unrolled step gives them a non-zero one."""
    problem = LinearKDProblem()
    _warm_start(problem)
    train, val = next(problem.train_batches()), next(problem.val_batches())
    gates = torch.full((4,), 0.5, dtype=torch.float64)
    first_order = unrolled_gate_gradient(problem, gates, train, val, xi=0.0)
    assert torch.equal(first_order.gates_grad, torch.zeros(4, dtype=torch.float64))
    gates_var = gates.clone().requires_grad_(True)
    direct = torch.autograd.grad(problem.val_loss(val), gates_var, allow_unused=True)[0]
    assert direct is None  # the validation graph never reaches the gates
    assert unrolled_gate_gradient(problem, gates, train, val, xi=0.05).gates_grad.abs().min() > 0
