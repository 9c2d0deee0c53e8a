"""The alternating updates DARTS and GDAS share: the architecture step's penalty charges the
``choice`` it is given, the student step follows its schedule, and divergence names the search."""

from __future__ import annotations

import math

import pytest
import torch

from rlpkd.errors import DivergenceError
from rlpkd.search.bilevel import BilevelSearch, BilevelSettings
from tests.search.test_hypergradient import LinearKDProblem


def _search(problem: LinearKDProblem, lam: float, costs: torch.Tensor, **settings) -> BilevelSearch:
    optimizer = torch.optim.SGD(problem.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    values = {"alpha_lr": 0.1, "xi": 0.0, "phase": "the test search", "lam": lam} | settings
    return BilevelSearch(
        problem, optimizer, len(costs), BilevelSettings(**values), costs, scheduler
    )


def test_with_xi_0_only_the_penalty_moves_the_logits_by_what_choice_charges():
    """xi = 0 gives an exactly zero gate gradient, so Adam's first step (-lr * sign) moves only
    the logits whose choice has a cost."""
    problem = LinearKDProblem(seed=0)
    search = _search(problem, lam=2.0, costs=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(search.logits, torch.zeros(4)) and search.costs.dtype == torch.float32
    train, val = next(problem.train_batches()), next(problem.val_batches())
    gates = torch.sigmoid(search.logits)
    hyper = search.update_architecture(train, val, gates, gates, step=1)
    assert torch.equal(hyper.gates_grad, torch.zeros(4))
    torch.testing.assert_close(search.logits.detach(), torch.tensor([-0.1, 0.0, 0.0, 0.0]))

    # the penalty follows ``choice``, not the gates (GDAS charges the sampled subset only)
    other = _search(LinearKDProblem(seed=0), lam=2.0, costs=torch.ones(4))
    only_p3 = torch.sigmoid(other.logits) * torch.tensor([0.0, 1.0, 0.0, 0.0])
    other.update_architecture(train, val, torch.sigmoid(other.logits), only_p3, step=1)
    torch.testing.assert_close(other.logits.detach(), torch.tensor([0.0, -0.1, 0.0, 0.0]))


def test_student_update_steps_the_student_and_its_schedule():
    problem = LinearKDProblem(seed=0)
    search = _search(problem, lam=0.0, costs=torch.zeros(4))
    before = problem.w.detach().clone()
    loss = search.update_student(next(problem.train_batches()), torch.ones(4), step=1)
    assert math.isfinite(loss) and not torch.equal(problem.w.detach(), before)
    assert search.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # scheduler stepped


def test_a_non_finite_step_names_the_settings_phase_and_step():
    problem = LinearKDProblem(seed=0)
    search = _search(problem, lam=0.0, costs=torch.zeros(4), xi=0.01)
    train, val = next(problem.train_batches()), next(problem.val_batches())
    with torch.no_grad():
        problem.w.fill_(math.inf)
    with pytest.raises(DivergenceError) as caught:
        search.update_architecture(train, val, torch.sigmoid(search.logits), torch.zeros(4), 7)
    assert caught.value.phase == "the test search" and caught.value.step == 7
    assert torch.equal(search.logits.detach(), torch.zeros(4))  # not updated with a NaN
