"""Reptile meta-learning of the policy's initial weights (Nichol et al., 2018)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.level_policy_module import build_level_module
from policies.reptile import (
    MetaTask,
    adaptation_curve,
    iterations_to_fraction,
    meta_train,
    reptile_update,
    task_distribution,
    task_env_config,
)
from policies.weights import read_weights_file
from rlpkd.config import Config, MetaConfig, config_from_dict
from rlpkd.levels import subsets_to_masks
from tests.policies import (
    TOY_ENV_NAME,
    TOY_OBS_DIM,
    ToyLevelSelectionEnv,
    toy_config,
    toy_env_config,
)

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.slow
def test_task_distribution_is_the_product_of_regimes_lambdas_and_depths():
    tasks = task_distribution(
        MetaConfig(regimes=["small", "large"], lambdas=[0.1, 1.0], student_depths=[18, 34])
    )
    assert len(tasks) == 8 and len(set(tasks)) == 8
    assert MetaTask("large", 1.0, 34) in tasks
    assert MetaTask("small", 0.1, 18).name == "small/lam0.1/r18"


def test_task_env_config_carries_the_task_into_the_env_config(tmp_path):
    task = MetaTask("small", 2.0, 34)
    env_config = task_env_config(Config(), task, tmp_path / "t.pt", tmp_path / "snap", 3)
    config = config_from_dict(env_config["config"])
    assert config.data.regime == "small" and config.student.depth == 34
    assert config.rl.lam == 2.0 and env_config["lam"] == 2.0 and env_config["seed"] == 3
    assert env_config["teacher_checkpoint"] == str(tmp_path / "t.pt")
    assert Config().data.regime == "mixed"  # the base config is untouched


def test_reptile_update_moves_by_epsilon_toward_the_task_weights():
    theta = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0])}
    task = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([3.0])}
    moved = reptile_update(theta, task, 0.25)
    torch.testing.assert_close(moved["w"], torch.tensor([0.25, 1.5]))
    torch.testing.assert_close(moved["b"], torch.tensor([1.5]))
    assert reptile_update(theta, task, 1.0)["w"].tolist() == task["w"].tolist()


def test_iterations_to_fraction():
    assert iterations_to_fraction([0.0, 5.0, 9.5, 10.0]) == 3
    assert iterations_to_fraction([-10.0, -3.0, -1.5, -1.0]) == 3  # negative rewards
    assert iterations_to_fraction([float("nan"), 9.0, 10.0], target=10.0, baseline=0.0) == 2
    assert iterations_to_fraction([0.0, 1.0], target=10.0, baseline=0.0) is None
    assert iterations_to_fraction([float("nan")]) is None


def _none_rate(state: dict[str, torch.Tensor], hidden: list[int]) -> float:
    """How often the greedy policy with ``state`` chooses no level, on fresh toy samples."""
    env = ToyLevelSelectionEnv({"config": {"rl": {"slots": 256}}, "seed": 99})
    obs, _ = env.reset()
    module = build_level_module(TOY_OBS_DIM, hidden)
    module.load_state_dict(state)
    actions = module.subset_logits(torch.as_tensor(np.stack(list(obs.values())))).argmax(-1)
    return (~subsets_to_masks(actions).any(-1)).float().mean().item()


@pytest.mark.slow
def test_meta_init_moves_toward_the_task_solutions(tmp_path):
    """Tasks that all prefer no levels: the meta-init picks 'none' far more than the random init."""
    config = toy_config()
    tasks = [MetaTask("small", 8.0, 18), MetaTask("large", 12.0, 18)]

    def make_env_config(task: MetaTask) -> dict:
        return toy_env_config(config, lam=task.lam)

    result = meta_train(
        config,
        make_env_config,
        tasks,
        iterations=3,
        inner_iterations=3,
        meta_lr=0.5,
        out_path=tmp_path / "meta_policy.pt",
        progress=False,
        env_name=TOY_ENV_NAME,
    )
    hidden = config.rl.hidden_sizes
    init_rate = _none_rate(result.init_state, hidden)
    meta_rate = _none_rate(result.meta_state, hidden)
    assert meta_rate > init_rate + 0.5, (init_rate, meta_rate)

    saved = read_weights_file(result.checkpoint)
    assert saved.obs_dim == TOY_OBS_DIM and saved.hidden_sizes == hidden
    assert all(torch.equal(saved.state[k], v) for k, v in result.meta_state.items())
    assert len(result.curves) == 3 and all(len(c.episode_return) == 3 for c in result.curves)
    assert {c.task for c in result.curves} <= set(tasks)
    assert len(result.summary()["curves"]) == 3

    # warm start from the meta-init begins far better than scratch on a task of the distribution
    env_config = toy_env_config(config, lam=10.0, seed=5)
    warm = adaptation_curve(config, env_config, result.meta_state, 2, env_name=TOY_ENV_NAME)
    scratch = adaptation_curve(config, env_config, None, 2, env_name=TOY_ENV_NAME)
    assert len(warm) == len(scratch) == 2 and all(math.isfinite(v) for v in warm + scratch)
    assert warm[0] > scratch[0], (warm, scratch)
