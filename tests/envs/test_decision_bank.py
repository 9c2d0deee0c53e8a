"""The decision bank: the live env's contexts with every level's value; the bank env pays what
the live env pays; held-out images are never trained on; the bank file round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.bank_bandit_env import BankBanditEnv
from envs.decision_bank import (
    DecisionBank,
    collect_decision_bank,
    decision_bank_fingerprint,
    split_by_image,
)
from envs.level_selection_env import LevelSelectionEnv
from rlpkd.config import config_from_dict
from rlpkd.errors import CheckpointError
from rlpkd.levels import NUM_SUBSETS

UNIT = 1e-3
LAM = 0.4


@pytest.mark.slow
def test_the_bank_env_pays_exactly_what_the_live_env_pays_for_the_same_context_and_action(
    env_config, tmp_path
):
    live = LevelSelectionEnv(env_config | {"value_unit": UNIT, "lam": LAM})
    torch.manual_seed(0)
    observations, _ = live.reset(seed=11)
    actions = {agent: (5 * i + 3) % NUM_SUBSETS for i, agent in enumerate(live.agents)}
    _, rewards, _, _, _ = live.step(actions)
    record = live.last_step
    shown = np.stack([observations[agent] for agent in live.agents])
    np.testing.assert_array_equal(record.observations, shown)
    bank = DecisionBank.from_steps([record], live.fraction_table.numpy())
    table = bank.reward_table(LAM, UNIT)
    for i, agent in enumerate(live.agents):
        assert table[i, actions[agent]] == pytest.approx(rewards[agent], rel=1e-5, abs=1e-6)

    # the bank env serving these contexts pays the same, less the context's mean over subsets
    path = bank.save(tmp_path / "bank.npz")
    served = BankBanditEnv(
        {"bank_file": str(path), "lam": LAM, "value_unit": UNIT, "seed": 0, "slots": 8}
    )
    obs, _ = served.reset(seed=0)
    rows = [int(np.flatnonzero((bank.observations == obs[a]).all(axis=1))[0]) for a in obs]
    chosen = {agent: actions[live.agents[row]] for agent, row in zip(obs, rows, strict=True)}
    _, paid, _, _, _ = served.step(chosen)
    for agent, row in zip(obs, rows, strict=True):
        live_agent = live.agents[row]
        expected = rewards[live_agent] - table[row].mean()
        assert paid[agent] == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_collected_bank_round_trips_and_the_live_env_can_exclude_held_out_images(
    env_config, tmp_path
):
    env = LevelSelectionEnv(env_config)
    bank = collect_decision_bank(env, 7, seed=0, progress=False)
    assert len(bank) == 7 and bank.level_values.shape == (7, 4)
    assert bank.metadata["value_gflops"] > 0 and bank.metadata["live_decisions"] >= 7
    assert set(bank.image_ids) <= set(env.train_set.image_ids)  # never V
    # episodes of 2 steps x 3 slots from the two stages (0.0, 0.2) in turn
    assert bank.progress[0] == 0.0 < bank.progress[6]  # episode 2 starts at the later stage
    again = DecisionBank.load(bank.save(tmp_path / "b.npz"))
    np.testing.assert_array_equal(again.level_values, bank.level_values)
    np.testing.assert_array_equal(again.observations, bank.observations)
    assert again.metadata == bank.metadata
    split = split_by_image(bank, 0.25, seed=0)
    excluded = [int(i) for i in split.heldout_images]
    live = LevelSelectionEnv(env_config | {"exclude_images": excluded})
    assert set(live.train_set.image_ids).isdisjoint(excluded)
    assert len(live.train_set) == len(env.train_set) - len(excluded)
    (tmp_path / "bad.npz").write_bytes(b"not a bank")
    with pytest.raises(CheckpointError, match="bad.npz"):
        DecisionBank.load(tmp_path / "bad.npz")


def test_split_by_image_keeps_every_image_on_one_side():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=300)
    bank = DecisionBank(
        observations=rng.normal(size=(300, 3)).astype(np.float32),
        level_values=rng.normal(size=(300, 4)),
        image_ids=images,
        progress=np.zeros(300),
        updates=np.arange(300),
        subset_costs=np.linspace(0, 1, 16),
    )
    split = split_by_image(bank, 0.25, seed=3)
    assert set(split.train.image_ids).isdisjoint(split.heldout.image_ids)
    assert len(split.train) + len(split.heldout) == 300
    assert len(split.heldout_images) == round(0.25 * len(np.unique(images)))
    assert split.heldout_images.tolist() == split_by_image(bank, 0.25, 3).heldout_images.tolist()


def test_value_by_progress_bins_the_all_level_value_by_training_progress():
    # two contexts early (all-level values 4 and 2), none in the middle, one at the very end (0)
    bank = DecisionBank(
        observations=np.zeros((3, 2), dtype=np.float32),
        level_values=np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]),
        image_ids=np.arange(3),
        progress=np.array([0.0, 0.4, 1.0]),
        updates=np.arange(3),
        subset_costs=np.linspace(0, 1, 16),
    )
    rows = bank.value_by_progress((0.0, 0.5, 0.75, 1.0))
    unit = 2.0  # mean |Σ_l v| over the three contexts
    assert [row["contexts"] for row in rows] == [2, 0, 1]  # progress 1.0 falls in the last bin
    assert rows[0]["mean_value"] == pytest.approx(3.0 / unit)
    assert np.isnan(rows[1]["mean_value"]) and rows[2]["mean_value"] == 0.0
    assert [row["share_of_value"] for row in rows] == pytest.approx([1.0, 0.0, 0.0])
    # in a unit of choice; a negative bin mean makes shares of a signed sum: NaN, not 1000%
    assert bank.value_by_progress((0.0, 0.5, 1.0), unit=1.0)[0]["mean_value"] == pytest.approx(3.0)
    bank.level_values[2] = -2.0  # the last context: all-level value -8
    signed = bank.value_by_progress((0.0, 0.5, 1.0))
    assert signed[1]["mean_value"] < 0
    assert all(np.isnan(row["share_of_value"]) for row in signed)


def test_the_bank_fingerprint_ignores_the_price_and_ppo_but_not_what_decides_the_contexts(
    tmp_path,
):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"weights")
    base = config_from_dict({})
    bank_print = decision_bank_fingerprint(base, teacher)
    for key, value in (("lam", 3.0), ("iterations", 99), ("learner", "live"), ("lr", 0.1)):
        other = config_from_dict({"rl": {key: value}})
        assert decision_bank_fingerprint(other, teacher) == bank_print, key
    for key, value in (("slots", 3), ("bank_decisions", 10), ("heldout_size", 2)):
        other = config_from_dict({"rl": {key: value}})
        assert decision_bank_fingerprint(other, teacher) != bank_print, key
    teacher.write_bytes(b"other weights")
    assert decision_bank_fingerprint(base, teacher) != bank_print
