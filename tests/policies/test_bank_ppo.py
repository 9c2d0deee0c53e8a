"""PPO through RLlib on the decision bank: it learns a planted per-sample rule from the exact
rewards, never sees held-out contexts, and repeats itself for a given seed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs.bank_bandit_env import BankBanditEnv
from envs.decision_bank import split_by_image
from envs.registration import BANK_ENV_NAME
from policies.heldout_score import HeldOutScorer, greedy_choices
from policies.ppo_setup import train_policy
from policies.weights import module_from_state, module_state
from tests.policies import toy_config
from tests.policies.toy_bank import TOY_BANK_OBS_DIM, saved_toy_bank, toy_bank

pytestmark = pytest.mark.usefixtures("ray_session")

HELDOUT_FRACTION = 0.25


def _bank_env_config(path, heldout_images, seed=0) -> dict:
    return {
        "bank_file": str(path),
        "heldout_images": [int(i) for i in heldout_images],
        "lam": 0.0,
        "value_unit": 1.0,
        "seed": seed,
    }


def test_the_bank_env_pays_the_exact_reward_above_random_and_never_serves_held_out_images(
    tmp_path,
):
    bank = toy_bank(400, seed=3)
    path = bank.save(tmp_path / "bank.npz")
    split = split_by_image(bank, HELDOUT_FRACTION, seed=0)
    env = BankBanditEnv(_bank_env_config(path, split.heldout_images) | {"slots": 8})
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
    config = toy_config(
        train_batch_size=2048, minibatch_size=512, num_epochs=6, lr=3e-3, entropy_coeff=0.0
    )
    env_config = _bank_env_config(path, split.heldout_images)

    def evaluate(algo):
        state = module_state(algo)
        return scorer.score(module_from_state(state, TOY_BANK_OBS_DIM, [32], "joint"))

    start = time.perf_counter()
    algo, history = train_policy(
        config,
        env_config,
        iterations=6,
        checkpoint_dir=tmp_path / "a",
        progress=False,
        env_name=BANK_ENV_NAME,
        evaluate=evaluate,
    )
    first = module_state(algo)
    algo.stop()
    assert history[-1]["heldout_score"] >= 0.9, [h["heldout_score"] for h in history]
    assert history[-1]["heldout_score"] > history[0]["heldout_score"]
    assert time.perf_counter() - start < 120
    # same config and seed: the same weights, so the same greedy choice on every held-out context
    again, _ = train_policy(
        config,
        env_config,
        iterations=1,
        checkpoint_dir=tmp_path / "b",
        progress=False,
        env_name=BANK_ENV_NAME,
    )
    second = module_state(again)
    again.stop()
    third, _ = train_policy(
        config,
        env_config,
        iterations=1,
        checkpoint_dir=tmp_path / "c",
        progress=False,
        env_name=BANK_ENV_NAME,
    )
    repeated = module_state(third)
    third.stop()
    for name in second:
        assert np.array_equal(second[name].numpy(), repeated[name].numpy()), name
    module = module_from_state(first, TOY_BANK_OBS_DIM, [32], "joint")
    assert len(np.unique(greedy_choices(module, split.heldout.observations))) > 4
