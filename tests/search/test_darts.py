"""DARTS over KD gates: the alternating loop on an analytic problem, and on the tiny detector."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlpkd.levels import LEVELS, mask_to_levels
from rlpkd.search.bilevel import BilevelInputs, BilevelSettings
from rlpkd.search.context import SearchContext
from rlpkd.search.darts import DARTS_PHASE, darts_gate_loop, darts_search, level_flops_fractions
from rlpkd.search.detector_problem import build_gradient_search
from rlpkd.search.hypergradient import unrolled_gate_gradient
from rlpkd.search.methods import SEARCH_METHODS
from tests.search.test_hypergradient import LinearKDProblem


def _run_linear(lam: float, costs: torch.Tensor | None = None) -> torch.Tensor:
    problem = LinearKDProblem(seed=0)
    optimizer = torch.optim.SGD(problem.parameters(), lr=0.05)
    settings = BilevelSettings(alpha_lr=0.05, xi=None, phase=DARTS_PHASE, eps=0.01, lam=lam)
    inputs = BilevelInputs(
        problem, optimizer, problem.train_batches(), problem.val_batches(), settings
    )
    alpha, trace = darts_gate_loop(inputs, 100, level_costs=costs)
    assert len(trace) == 100
    return torch.sigmoid(alpha)


def test_darts_loop_shuts_the_useless_level():
    """With lam = 0, the validation loss alone pushes the noisy teacher's gate down, below the
    useful levels' gates, and those up (all start at sigmoid(0) = 0.5)."""
    gates = _run_linear(lam=0.0)
    assert gates[3] < 0.3
    assert (gates[:3] > 0.5).all()
    assert gates[3] < gates[:3].min()


def test_darts_flops_penalty_shuts_an_expensive_level():
    """A large lam on level 0's cost shuts level 0, although its KD is useful."""
    gates = _run_linear(lam=1.0, costs=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert gates[0] < 0.3 < gates[1]


def test_level_flops_fractions(search_context):
    costs = level_flops_fractions(search_context.flops)
    assert costs.shape == (4,) and (costs > 0).all()
    assert float(costs.sum()) == pytest.approx(1.0)
    assert costs[0] == costs.max()  # P2 is the most expensive level to distil


def _darts_context(context: SearchContext, steps: int = 2) -> SearchContext:
    """The search fixture with ``steps`` gradient steps, lam = 0 and batches of 4 images."""
    config = context.config
    search = dataclasses.replace(config.search, gradient_steps=steps, lam=0.0)
    schedule = dataclasses.replace(config.student_schedule, batch_size=4)
    config = dataclasses.replace(config, search=search, student_schedule=schedule)
    return dataclasses.replace(context, config=config)


@pytest.mark.slow
def test_detector_problem_restores_the_student_and_caches_the_teacher(search_context, monkeypatch):
    import rlpkd.search.detector_problem as module

    calls = []
    real_pyramid = module.lazy_teacher_pyramid
    monkeypatch.setattr(
        module, "lazy_teacher_pyramid", lambda *a, **k: calls.append(1) or real_pyramid(*a, **k)
    )
    setup = build_gradient_search(_darts_context(search_context), 2, DARTS_PHASE)
    problem = setup.problem
    before = {k: v.clone() for k, v in problem.student.state_dict().items()}
    train, val = next(setup.train_batches), next(setup.val_batches)
    result = unrolled_gate_gradient(problem, torch.full((4,), 0.5), train, val, xi=0.01)
    assert result.gates_grad.abs().sum() > 0  # alpha gets a gradient from the validation loss
    after = problem.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert len(calls) == 1  # one teacher pass (all levels) for the training batch
    scale = problem.objective.scale.scale.clone()
    assert problem.objective.scale.initialised.all()
    problem.train_loss(train, torch.ones(4))
    assert torch.equal(problem.objective.scale.scale, scale)  # updated once per batch
    assert len(calls) == 1


@pytest.mark.slow
def test_darts_search_on_the_tiny_detector(search_context):
    context = _darts_context(search_context, steps=2)
    result = darts_search(context)
    assert SEARCH_METHODS.get("darts") is darts_search
    assert result.method == "darts"
    assert set(result.levels) <= set(LEVELS)
    assert len(result.trace) == 2
    assert any(abs(g) > 0 for step in result.trace for g in step["gates_grad"])
    # alpha moved away from 0 (Adam's first step moves every coordinate with a gradient)
    assert any(abs(a) > 0 for a in result.trace[-1]["alpha"])
    gates = torch.sigmoid(torch.tensor(result.trace[-1]["alpha"]))
    assert result.levels == mask_to_levels(gates > context.config.search.gate_threshold)
    cost = result.cost
    assert cost.wall_time_s > 0 and cost.kd_gflops > 0 and cost.student_images > 0
    assert cost.evaluations == 2 and cost.device == "cpu"
    assert cost.student_images == 2 * (4 * 4 + 4)  # per step: train batch x4, held-out batch
    expected_gflops = 2 * 4 * context.flops.kd_flops(LEVELS) / 1e9  # 2 steps of 4 images
    assert cost.kd_gflops == pytest.approx(expected_gflops)
