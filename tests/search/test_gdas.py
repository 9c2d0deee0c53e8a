"""GDAS over level subsets: the hard Gumbel-softmax sample, tau annealing, and short runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlpkd.levels import LEVELS, all_subsets, format_levels, index_to_subset, levels_to_mask
from rlpkd.search.bilevel import BilevelInputs, BilevelSettings
from rlpkd.search.gdas import (
    GDAS_PHASE,
    SUBSET_MASKS,
    annealed_tau,
    gdas_search,
    gdas_subset_loop,
    sample_subset_gates,
)
from rlpkd.search.methods import SEARCH_METHODS
from tests.search.test_hypergradient import LinearKDProblem


@pytest.mark.parametrize("tau", [10.0, 1.0, 0.1])
def test_sample_is_exactly_one_hot_and_gates_are_the_subset_mask(tau):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, generator=generator)
    for _ in range(50):
        one_hot, gates = sample_subset_gates(logits, tau, generator)
        assert set(one_hot.tolist()) <= {0.0, 1.0} and one_hot.sum() == 1.0
        subset = index_to_subset(int(one_hot.argmax()))
        assert torch.equal(gates, levels_to_mask(subset).float())


def test_subset_masks_follow_the_index_encoding():
    for index, subset in enumerate(all_subsets()):
        assert torch.equal(SUBSET_MASKS[index], levels_to_mask(subset).float())


def test_gradient_through_the_gates_reaches_the_logits():
    logits = torch.zeros(16, requires_grad=True)
    _, gates = sample_subset_gates(logits, 1.0, torch.Generator().manual_seed(0))
    (gates * torch.tensor([1.0, -2.0, 3.0, -4.0])).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_samples_follow_softmax_of_the_logits_and_are_seeded():
    """Gumbel-max: the hard sample's law is softmax(logits), whatever tau."""
    logits = torch.tensor([2.0, 1.0, 0.0] + [-1.0] * 13)
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(16)
    for _ in range(2000):
        counts += sample_subset_gates(logits, 0.5, generator)[0]
    torch.testing.assert_close(counts / 2000, torch.softmax(logits, 0), atol=0.03, rtol=0.0)
    first = [sample_subset_gates(logits, 1.0, torch.Generator().manual_seed(5))[0] for _ in "ab"]
    assert torch.equal(first[0], first[1])


def test_tau_anneals_linearly_from_max_to_min():
    taus = [annealed_tau(step, 5, 10.0, 0.1) for step in range(5)]
    assert taus[0] == 10.0 and taus[-1] == 0.1
    assert all(a > b for a, b in zip(taus[:-1], taus[1:], strict=True))
    assert taus[2] == pytest.approx(5.05)


def test_gdas_loop_prefers_the_useful_levels():
    """With lam = 0 on the analytic problem, the subsets with the noisy level 3 lose their mass
    and each useful level ends in more than half of it (all start at 1/2)."""
    problem = LinearKDProblem(seed=0)
    inputs = BilevelInputs(
        problem,
        torch.optim.SGD(problem.parameters(), lr=0.05),
        problem.train_batches(),
        problem.val_batches(),
        BilevelSettings(alpha_lr=0.05, xi=None, phase=GDAS_PHASE, eps=0.01),
    )
    beta, trace = gdas_subset_loop(
        inputs,
        150,
        generator=torch.Generator().manual_seed(0),
        tau_max=5.0,
        tau_min=0.1,
    )
    inclusion = torch.softmax(beta, 0) @ SUBSET_MASKS  # [4] P(level in the sampled subset)
    assert inclusion[3] < 0.1
    assert (inclusion[:3] > 0.5).all()
    assert "P5" not in index_to_subset(int(beta.argmax()))
    assert trace[0]["tau"] == 5.0 and trace[-1]["tau"] == 0.1


def test_subset_costs_are_kd_fractions(search_context):
    fractions = search_context.flops.subset_kd_fractions()
    assert fractions[0] == 0.0 and fractions[15] == pytest.approx(1.0)
    assert ((fractions >= 0) & (fractions <= 1)).all()


@pytest.mark.slow
def test_gdas_search_on_the_tiny_detector(search_context):
    config = search_context.config
    search = dataclasses.replace(config.search, gradient_steps=2, lam=0.0)
    schedule = dataclasses.replace(config.student_schedule, batch_size=4)
    config = dataclasses.replace(config, search=search, student_schedule=schedule)
    context = dataclasses.replace(search_context, config=config)
    result = gdas_search(context)
    assert SEARCH_METHODS.get("gdas") is gdas_search
    assert result.method == "gdas" and set(result.levels) <= set(LEVELS)
    assert len(result.trace) == 2
    assert result.trace[0]["tau"] == search.tau_max and result.trace[-1]["tau"] == search.tau_min
    names = {format_levels(s) for s in all_subsets()}
    assert all(step["subset"] in names for step in result.trace)
    last = torch.tensor(result.trace[-1]["probabilities"])
    assert float(last.sum()) == pytest.approx(1.0)
    assert result.levels == index_to_subset(int(last.argmax()))  # the pick is argmax beta
    assert any(abs(g) > 0 for step in result.trace for g in step["gates_grad"])
    cost = result.cost
    assert cost.wall_time_s > 0 and cost.kd_gflops > 0 and cost.student_images > 0
    assert cost.evaluations == 2
