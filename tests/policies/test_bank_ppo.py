"""PPO through RLlib on the decision bank: it learns a planted per-sample rule from the exact
rewards, never sees held-out contexts, and repeats itself for a given seed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs.bank_bandit_env import BankBanditEnv
from envs.decision_bank import split_by_image
from policies.heldout_score import HeldOutScorer, greedy_choices
from policies.weights import module_state
from tests.policies.toy_bank import (
    bank_env_config,
    saved_toy_bank,
    toy_bank,
    toy_bank_module,
    train_on_bank,
)

pytestmark = pytest.mark.usefixtures("ray_session")

HELDOUT_FRACTION = 0.25


def test_the_bank_env_pays_the_exact_reward_above_random_and_never_serves_held_out_images(
    tmp_path,
):
    bank = toy_bank(400, seed=3)
    path = bank.save(tmp_path / "bank.npz")
    split = split_by_image(bank, HELDOUT_FRACTION, seed=0)
    env = BankBanditEnv(bank_env_config(path, split.heldout_images) | {"slots": 8})
    table = bank.reward_table(0.0, 1.0)
    index = {obs.tobytes(): i for i, obs in enumerate(bank.observations)}
    observations, _ = env.reset(seed=1)
    served = set()
    for step in range(50):
        rows = [index[observations[agent].tobytes()] for agent in env.agents]
        served |= {int(bank.image_ids[i]) for i in rows}
        actions = {agent: (3 * k + step) % 16 for k, agent in enumerate(env.agents)}
        observations, rewards, _, _, infos = env.step(actions)
        for k, agent in enumerate(env.agents):
            row, action = rows[k], actions[agent]
            assert rewards[agent] == pytest.approx(table[row, action] - table[row].mean())
            assert infos[agent]["flops_fraction"] == pytest.approx(bank.subset_costs[action])
    assert served and served.isdisjoint(split.heldout_images.tolist())
    assert len(served) > 100


@pytest.mark.slow
def test_ppo_learns_a_planted_per_sample_rule_from_the_bank_and_repeats_itself(tmp_path):
    path = saved_toy_bank(tmp_path, contexts=4000, seed=0)
    split = split_by_image(toy_bank(4000, seed=0), HELDOUT_FRACTION, seed=0)
    scorer = HeldOutScorer.from_split(split, lam=0.0, unit=1.0)
    env_config = bank_env_config(path, split.heldout_images)

    start = time.perf_counter()
    algo, history = train_on_bank(
        env_config,
        6,
        checkpoint_dir=tmp_path / "a",
        evaluate=lambda algo: scorer.score(toy_bank_module(algo)),
    )
    module = toy_bank_module(algo)
    algo.stop()
    assert history[-1]["heldout_score"] >= 0.9, [h["heldout_score"] for h in history]
    assert history[-1]["heldout_score"] > history[0]["heldout_score"]
    assert time.perf_counter() - start < 120
    # same config and seed: the same weights, so the same greedy choice on every held-out context
    states = []
    for run in ("b", "c"):
        again, _ = train_on_bank(env_config, 1, checkpoint_dir=tmp_path / run)
        states.append(module_state(again))
        again.stop()
    second, repeated = states
    for name in second:
        assert np.array_equal(second[name].numpy(), repeated[name].numpy()), name
    assert len(np.unique(greedy_choices(module, split.heldout.observations))) > 4
