"""A KD budget is spent exactly: the allocator, the account, and every budgeted control over a run."""

from __future__ import annotations

import itertools

import pytest
import torch

from rlpkd.levels import NUM_SUBSETS, subset_to_index
from rlpkd.training import budget_selection as selection
from rlpkd.training.budget_allocation import BudgetAccount, allocate_subsets, pace_rate
from tests.conftest import distil_on_cpu, tiny_distillation_inputs

COSTS = torch.tensor([0.0] + [0.55 + 0.03 * i for i in range(1, NUM_SUBSETS - 1)] + [1.0])


def brute_force_best(scores: torch.Tensor, costs: torch.Tensor, allowance: float) -> float:
    best = float("-inf")
    for choice in itertools.product(range(scores.shape[1]), repeat=scores.shape[0]):
        index = torch.tensor(choice)
        if float(costs[index].sum()) <= allowance + 1e-12:
            best = max(best, float(scores[torch.arange(len(index)), index].sum()))
    return best


def test_the_allocation_never_overspends_and_uses_what_it_can():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        scores = torch.rand(16, NUM_SUBSETS, generator=generator, dtype=torch.float64)
        allowance = float(torch.rand((), generator=generator)) * 16
        chosen = allocate_subsets(scores, COSTS, allowance)
        spent = float(COSTS[chosen].sum())
        assert spent <= allowance + 1e-9
        # what is left buys no sample a dearer subset than the one it has
        assert allowance - spent < 1.0 + 1e-9


def test_the_allocation_is_optimal_on_all_or_nothing_choices():
    costs = torch.tensor([0.0, 0.6, 1.0])
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        priority = torch.rand(5, generator=generator, dtype=torch.float64)
        scores = torch.stack([torch.zeros(5), torch.full((5,), float("-inf")), priority], dim=1)
        allowance = float(torch.randint(0, 6, (), generator=generator))
        chosen = allocate_subsets(scores, costs, allowance)
        # the `allowance` samples of highest priority get all levels
        expected = set(torch.argsort(-priority)[: int(allowance)].tolist())
        assert set(torch.nonzero(chosen == 2).flatten().tolist()) == expected
        assert float(scores[torch.arange(5), chosen].sum()) == pytest.approx(
            brute_force_best(scores, costs, allowance)
        )


def test_a_negative_allowance_distils_nothing_and_a_large_one_everything():
    scores = torch.zeros(4, NUM_SUBSETS, dtype=torch.float64)
    assert allocate_subsets(scores, COSTS, -1.0).tolist() == [0] * 4
    assert allocate_subsets(scores, COSTS, 100.0).tolist() == [NUM_SUBSETS - 1] * 4


def test_the_account_carries_what_a_batch_left_to_the_next():
    account = BudgetAccount(0.5)
    assert account.allowance(4) == pytest.approx(2.0)
    account.charge(4, 1.4)
    assert account.allowance(4) == pytest.approx(2.6)
    state = account.state_dict()
    restored = BudgetAccount(0.5)
    restored.load_state_dict(state)
    assert restored.allowance(4) == pytest.approx(2.6)
    with pytest.raises(ValueError, match="fraction"):
        BudgetAccount(1.5)


def test_a_paced_account_spends_the_run_budget_by_its_weights():
    """With pace [3, 1] a run spends three quarters of its budget in its first half, and the
    run's budget to within one sample's cost; the even account spends each half alike."""
    steps, batch = 100, 16
    generator = torch.Generator().manual_seed(2)
    for pace, first_share in (((3.0, 1.0), 0.75), ((), 0.5)):
        account = BudgetAccount(0.4, pace)
        halves = [0.0, 0.0]
        for step in range(steps):
            progress = step / steps
            scores = torch.rand(batch, NUM_SUBSETS, generator=generator, dtype=torch.float64)
            chosen = allocate_subsets(scores, COSTS, account.allowance(batch, progress))
            cost = float(COSTS[chosen].sum())
            account.charge(batch, cost, progress)
            halves[int(progress >= 0.5)] += cost
        assert account.spent == pytest.approx(0.4 * steps * batch, abs=1.0)
        assert halves[0] / account.spent == pytest.approx(first_share, abs=0.01)
    restored = BudgetAccount(0.4, (3.0, 1.0))
    restored.load_state_dict(account.state_dict() | {"allowed": 5.0})
    assert restored.allowance(batch, 0.9) == pytest.approx(5.0 + 0.4 * batch * 0.5 - account.spent)
    assert pace_rate((3.0, 1.0), 0.2) == 1.5
    assert pace_rate((), 0.2) == 1.0
    with pytest.raises(ValueError, match="pace"):
        BudgetAccount(0.4, (0.0, 0.0))


def test_a_pace_is_in_the_fingerprint_and_no_pace_keeps_it():
    scorer = selection.RandomSampleScores(0)
    even = selection.BudgetedLevels(scorer, COSTS, 0.5, "random-samples", fingerprint="f")
    paced = selection.BudgetedLevels(scorer, COSTS, 0.5, "r", fingerprint="f", pace=[2, 1, 1])
    assert even.fingerprint == "f"
    assert paced.fingerprint == "f:pace=0.5000,0.2500,0.2500"


@pytest.mark.parametrize("budget", [0.3, 0.7])
def test_budgeted_selection_holds_the_budget_in_every_epoch(tiny_config, budget):
    """Each budgeted control spends its budget within 2% in every epoch of a real distillation
    run, and the temporal controls over the schedule."""
    config = tiny_config
    config.student_schedule.epochs = 2
    datasets, teacher, flops = tiny_distillation_inputs(config)
    fractions = flops.subset_kd_fractions().double()
    low = subset_to_index(("P5",))
    high = subset_to_index(("P2", "P3", "P4", "P5"))
    scorers = {
        "random-samples": selection.RandomSampleScores(0),
        "random-subsets": selection.RandomSubsetScores(
            flops.inclusion_prob_for_fraction(budget), 0
        ),
        "gap-ranked": selection.GapRankedScores(0),
        "loss-ranked": selection.LossRankedScores(config.data.level_thresholds),
    }
    if fractions[low] <= budget:
        scorers["static-mix"] = selection.StaticPairScores(low, high)
    per_epoch = len(datasets.train) // config.student_schedule.batch_size
    for name, scorer in scorers.items():
        selector = selection.BudgetedLevels(scorer, fractions, budget, name)
        spent: list[float] = []

        def on_step(step, batch, mask, terms, spent=spent):
            spent.append(float(fractions[mask.long() @ torch.tensor([1, 2, 4, 8])].mean()))

        distil_on_cpu(config, datasets, teacher, selector, flops, on_step=on_step)
        for epoch in range(config.student_schedule.epochs):
            share = sum(spent[epoch * per_epoch : (epoch + 1) * per_epoch]) / per_epoch
            assert share == pytest.approx(budget, rel=0.02, abs=1.0 / len(datasets.train)), name
    total = config.student_schedule.epochs * per_epoch * config.student_schedule.batch_size
    for early in (True, False):
        selector = selection.TemporalLevels(budget, early, total)
        _, _, stats = distil_on_cpu(config, datasets, teacher, selector, flops)
        share = stats.kd_flops / stats.images / flops.kd_flops("all")
        assert share == pytest.approx(budget, abs=1.0 / total + 1e-9)


def test_the_gap_memory_ranks_by_the_last_measured_gap(tiny_config):
    datasets, teacher, flops = tiny_distillation_inputs(tiny_config)
    scorer = selection.GapRankedScores(0)
    selector = selection.BudgetedLevels(scorer, flops.subset_kd_fractions(), 0.5, "gap-ranked")
    distil_on_cpu(tiny_config, datasets, teacher, selector, flops)
    assert scorer.gaps, "no gap was remembered"
    assert all(gap >= 0 for gap in scorer.gaps.values())
    state = selector.state_dict()
    assert list(state) == ["account", "scorer"]  # the keys resume files were written with
    again = selection.BudgetedLevels(
        selection.GapRankedScores(0), flops.subset_kd_fractions(), 0.5, "gap-ranked"
    )
    again.load_state_dict(state)
    assert again.scorer.gaps == scorer.gaps
    assert again.account.spent == selector.account.spent
