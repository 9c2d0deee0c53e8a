"""The level-selection env: RLlib-valid, a reward per sample from its own value signal (or gap drop)
and FLOPs, teacher-free observations the Phase-3 selector rebuilds exactly, truncated fixed-length
episodes, a held-out batch V no step trains on, a reused snapshot pool."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.level_selection_env import ENV_PHASE, LevelSelectionEnv
from envs.observation import (
    BASE_OBS_DIM,
    class_histogram,
    object_scale_histogram,
    observation_dim,
)
from envs.registration import ENV_NAME, register_envs
from envs.rewards import subset_flops_fractions
from envs.rewards.gap_drop import sample_rewards
from envs.rewards.value import RunningValueScale, value_rewards
from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from rlpkd.distill.level_value import level_values
from rlpkd.distill.objective import DistillationState
from rlpkd.errors import DivergenceError
from rlpkd.levels import subset_to_index, subsets_to_masks
from rlpkd.training.kd_step import detached_features

REPO = Path(__file__).resolve().parents[2]
SLOTS = 3
ALL = subset_to_index(("P2", "P3", "P4", "P5"))


def _with_reward(env_config: dict, reward: str) -> dict:
    config = copy.deepcopy(env_config["config"])
    config["rl"]["reward"] = reward
    return env_config | {"config": config}


@pytest.fixture(scope="module")
def env(env_config) -> LevelSelectionEnv:
    """The default reward (debug.yaml): ``value``."""
    assert env_config["config"]["rl"]["reward"] == "value"
    return LevelSelectionEnv(env_config)


@pytest.fixture(scope="module")
def gap_drop_env_config(env_config) -> dict:
    return _with_reward(env_config, "gap_drop")


def _reset(env: LevelSelectionEnv, seed: int) -> dict:
    torch.manual_seed(seed)  # the dataset's random flips use torch's global RNG
    observations, _ = env.reset(seed=seed)
    return observations


@pytest.mark.slow
def test_env_passes_rllib_multi_agent_checker(env):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    # without these the checker only logs a warning and returns
    assert hasattr(env, "_agent_ids") and hasattr(env, "observation_space")
    check_multiagent_environments(env)
    assert env.possible_agents == [f"slot_{i}" for i in range(SLOTS)]
    observations, _ = env.reset(seed=1)
    actions = {agent: env.get_action_space(agent).sample() for agent in env.agents}
    _, rewards, _, _, _ = env.step(actions)
    for agent in env.possible_agents:
        assert env.get_observation_space(agent).contains(observations[agent])
        assert isinstance(rewards[agent], float) and math.isfinite(rewards[agent])


@pytest.mark.slow
def test_episode_is_truncated_after_episode_steps_with_finite_observations(env):
    observations, _ = env.reset(seed=2)
    env.reset_metrics()
    steps, done, chosen = 0, False, []
    while not done:
        for row in observations.values():
            assert row.shape == (observation_dim(env.num_classes),) and row.dtype == np.float32
            assert np.isfinite(row).all()
        actions = {agent: (i + steps) % 16 for i, agent in enumerate(env.agents)}
        chosen.append(subsets_to_masks(torch.tensor(list(actions.values()))))
        observations, rewards, terminateds, truncateds, infos = env.step(actions)
        steps += 1
        # the student's run goes on: the segment is truncated, never terminated
        done = truncateds["__all__"]
        assert not terminateds["__all__"] and not any(terminateds.values())
        assert set(infos["slot_0"]) >= {"value", "value_all_levels", "flops_fraction", "num_levels"}
    assert steps == env.config.rl.episode_steps
    assert env.config.rl.gamma == 0.0  # one decision is a contextual bandit
    metrics = env.metrics()
    counts = torch.cat(chosen).sum(dim=0)
    assert metrics["decisions"] == SLOTS * steps
    assert metrics["selection_rate_P2"] == pytest.approx(float(counts[0]) / (SLOTS * steps))
    # the value reward measures no KD gap drop; its own signal has a cost and statistics
    assert "gap_eval_gflops" not in metrics and "mean_kd_gap_drop" not in metrics
    assert metrics["value_gflops_per_decision"] > 0 and metrics["value_time_s"] > 0
    assert metrics["reward_signal_gflops_per_decision"] == metrics["value_gflops_per_decision"]
    assert metrics["value_scale"] > 0 and 0 <= metrics["value_positive_share"] <= 1
    assert metrics["value_std"] > 0 and np.isfinite(metrics["value_mean_all_levels"])
    assert np.isfinite(metrics["mean_kd_gap"]) and metrics["step_time_s_per_decision"] > 0


@pytest.mark.slow
def test_value_reward_is_the_chosen_levels_value_over_the_running_scale_minus_the_price(env):
    _reset(env, seed=8)
    state = env.state
    # the student, objective and optimiser as the step will find them, copied together
    student, objective, optimizer = copy.deepcopy((state.student, state.objective, state.optimizer))
    batch, previous_scale = env.batch, env.reward.scale.value
    actions = {"slot_0": 0, "slot_1": ALL, "slot_2": subset_to_index(("P3", "P5"))}
    _, rewards, _, _, infos = env.step(actions)

    values = level_values(
        DistillationState(student, env.teacher, objective, optimizer), batch, env.heldout
    ).values
    batch_scale = float(values.sum(dim=1).abs().mean())
    scale = RunningValueScale()
    if previous_scale is not None:  # the env's scale carries over from earlier steps
        scale.value, scale.updates = previous_scale, env.reward.scale.updates - 1
    expected_scale = scale.update(values)
    assert env.reward.scale.value == pytest.approx(expected_scale, rel=1e-6)
    if previous_scale is None:
        assert expected_scale == pytest.approx(batch_scale)
    masks = subsets_to_masks(torch.tensor([actions[a] for a in env.agents]))
    for i, agent in enumerate(env.agents):
        chosen = float(values[i][masks[i]].sum()) / expected_scale
        fraction = infos[agent]["flops_fraction"]
        assert rewards[agent] == pytest.approx(chosen - env.lam * fraction, rel=1e-4, abs=1e-6)
        assert infos[agent]["value"] == pytest.approx(chosen, rel=1e-4, abs=1e-6)
    assert rewards["slot_0"] == 0.0 and infos["slot_0"]["flops_fraction"] == 0.0
    assert infos["slot_1"]["flops_fraction"] == pytest.approx(1.0)


@pytest.mark.slow
def test_heldout_batch_is_never_trained_on(env, gap_drop_env_config):
    heldout = set(env.heldout.image_ids.tolist())
    assert len(heldout) == env.config.rl.heldout_size
    assert heldout.isdisjoint(env.train_set.image_ids)
    # the whole held-out part of the split (V and the rest of it) is left out of training
    total = len(env.datasets.train)
    assert len(env.train_set) == total - round(env.config.search.holdout_fraction * total)
    _reset(env, seed=9)
    drawn = set()
    for _ in range(20):
        drawn |= set(env._next_batch().image_ids.tolist())
    assert drawn <= set(env.train_set.image_ids) and drawn.isdisjoint(heldout)
    # gap_drop trains on the whole training split and has no V
    other = LevelSelectionEnv(gap_drop_env_config)
    assert other.heldout is None and len(other.train_set) == len(other.datasets.train)


def test_value_rewards_and_running_scale():
    values = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 0.0, 0.0, -4.0]])
    masks = torch.tensor([[True, False, True, False], [False, False, False, True]])
    scale = RunningValueScale()
    first = scale.update(values)  # initialised from the first batch: mean |Σ_l v_il|
    assert first == pytest.approx((2.5 + 4.0) / 2)
    rewards = value_rewards(values, masks, first, torch.tensor([0.4, 0.6]), lam=0.5)
    assert rewards.tolist() == pytest.approx([4.0 / first - 0.2, -4.0 / first - 0.3])
    # a running mean at first, so the first batch does not dominate the second
    assert scale.update(10 * values) == pytest.approx((first + 10 * first) / 2)
    with pytest.raises(ValueError, match="scale"):
        value_rewards(values, masks, 0.0, torch.tensor([0.4, 0.6]), lam=0.5)


@pytest.mark.slow
def test_phase_3_selector_builds_exactly_the_env_observation(env):
    """Same student, same batch and running gap: PolicyLevels shows the env's observation, with
    the class histogram and no budget column (``rl.flops_budget`` is gone)."""
    observations = _reset(env, seed=10)
    env_rows = torch.as_tensor(np.stack([observations[a] for a in env.agents]))
    selector = PolicyLevels(
        build_level_module(observation_dim(env.num_classes), [8]),
        env.config.data.level_thresholds,
        student=env.state.student,
    )
    selector.running_gap.load_state_dict(env.state.running_gap.state_dict())
    assert selector.num_classes == env.num_classes
    features = detached_features(env._output)
    phase3 = selector.observations_from_features(env.batch, features, env.state.progress)
    torch.testing.assert_close(phase3, env_rows, rtol=0, atol=0)
    # the class histogram: each sample's boxes by class
    histogram = env_rows[:, BASE_OBS_DIM:]
    torch.testing.assert_close(histogram, class_histogram(env.batch.labels, env.num_classes))
    has_boxes = (env.batch.labels >= 0).any(dim=1)
    torch.testing.assert_close(histogram.sum(dim=1), has_boxes.float())
    assert "budget_left" not in selector.state_dict()


def test_class_histogram_counts_each_samples_boxes_by_class():
    labels = torch.tensor([[0, 2, 2, -1], [-1, -1, -1, -1]])
    expected = torch.tensor([[1 / 3, 0.0, 2 / 3], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(class_histogram(labels, 3), expected)


@pytest.mark.slow
def test_gap_drop_rewards_come_from_each_samples_own_gap_and_flops(gap_drop_env_config):
    register_envs()
    from ray.tune.registry import ENV_CREATOR, _global_registry

    lam = 100.0
    env = _global_registry.get(ENV_CREATOR, ENV_NAME)(gap_drop_env_config | {"lam": lam})
    assert isinstance(env, LevelSelectionEnv) and env.lam == lam
    env.reset(seed=3)
    actions = {"slot_0": 0, "slot_1": ALL, "slot_2": subset_to_index(("P5",))}
    _, rewards, _, _, infos = env.step(actions)
    fractions = [infos[a]["flops_fraction"] for a in env.agents]
    assert fractions[0] == 0.0 and fractions[1] == pytest.approx(1.0)
    assert 0.0 < fractions[2] < 1.0
    for agent in env.agents:
        info = infos[agent]
        expected = info["kd_gap_drop"] - lam * info["flops_fraction"]
        assert rewards[agent] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert rewards["slot_0"] > rewards["slot_2"] > rewards["slot_1"]
    # each sample's own gap, not a batch mean
    assert len({round(infos[a]["kd_gap_drop"], 6) for a in env.agents}) == SLOTS
    assert [infos[a]["num_levels"] for a in env.agents] == [0, 4, 1]


def test_sample_rewards_follow_each_samples_normalised_all_level_gap_drop():
    gap_before = torch.tensor([[2.0, 2.0, 20.0, 20.0], [2.0, 2.0, 20.0, 20.0]])
    # sample 0 improves more; sample 1 chose only P2 but its P5 gap dropped too, which counts
    gap_after = torch.tensor([[1.0, 1.0, 10.0, 10.0], [1.5, 2.0, 20.0, 10.0]])
    scale = torch.tensor([1.0, 1.0, 10.0, 10.0])
    masks = torch.tensor([[True, True, True, True], [True, False, False, False]])
    table = torch.linspace(0.0, 1.0, 16)
    fractions = subset_flops_fractions(masks, table)
    assert fractions.tolist() == pytest.approx([1.0, table[1].item()])
    free = sample_rewards(gap_before, gap_after, scale, masks, fractions, lam=0.0)
    assert free.tolist() == pytest.approx([4.0, 1.5])
    priced = sample_rewards(gap_before, gap_after, scale, masks, fractions, lam=3.0)
    assert priced.tolist() == pytest.approx([4.0 - 3.0, 1.5 - 3.0 * table[1].item()])


@pytest.mark.slow
def test_observation_does_not_depend_on_the_teacher(env):
    before = _reset(env, seed=4)
    original = copy.deepcopy(env.teacher.state_dict())
    with torch.no_grad():
        for parameter in env.teacher.parameters():
            parameter.add_(torch.randn_like(parameter))
    after = _reset(env, seed=4)
    env.teacher.load_state_dict(original)
    for agent in env.agents:
        np.testing.assert_array_equal(before[agent], after[agent])


def test_object_scale_histogram_assigns_boxes_by_the_fcos_rule():
    # half extents 3 (P2), 10 (P4) and a padding row, thresholds (4, 8, 16)
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 4.0], [0.0, 0.0, 20.0, 8.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 1, -1]])
    histogram = object_scale_histogram(boxes, labels, (4.0, 8.0, 16.0))
    assert histogram[0].tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0, math.log(3.0)])


@pytest.mark.slow
def test_snapshot_pool_covers_the_stages_and_is_reused_by_a_second_env(
    env, env_config, monkeypatch
):
    _reset(env, seed=5)
    assert env.snapshots is not None and len(env.snapshots) == 2
    saved = [torch.load(p, map_location="cpu", weights_only=True) for p in env.snapshots]
    assert [s["step"] for s in saved] == [0, round(0.2 * saved[0]["total_steps"])]
    assert saved[1]["step"] > 0
    mtimes = [p.stat().st_mtime_ns for p in env.snapshots]

    def no_training(*args, **kwargs):
        raise AssertionError("the snapshot pool was trained again")

    monkeypatch.setattr("envs.snapshots.kd_training_step", no_training)
    second = LevelSelectionEnv(env_config)
    second.reset(seed=0)
    assert second.snapshots == env.snapshots
    assert [p.stat().st_mtime_ns for p in second.snapshots] == mtimes


@pytest.mark.slow
def test_a_nan_box_in_the_env_batch_stops_the_step_before_the_update(env_config):
    env = LevelSelectionEnv(env_config)
    _reset(env, seed=6)
    before = copy.deepcopy(dict(env.state.student.named_parameters()))
    env.batch.boxes[0, 0, 2] = math.nan
    with pytest.raises(DivergenceError) as caught:
        env.step({agent: ALL for agent in env.agents})
    error = caught.value
    assert (error.phase, error.term) == (ENV_PHASE, "detection")
    assert error.step == env.state.step + 1  # the update that was not taken
    for name, value in env.state.student.named_parameters():
        assert torch.equal(value, before[name]), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reward", "term", "updated"),
    [("gap_drop", "reward: kd_gap_before_P5", True), ("value", "reward: value_P5", False)],
)
def test_a_nan_reward_stops_the_env_naming_the_level(env_config, reward, term, updated):
    env = LevelSelectionEnv(_with_reward(env_config, reward))
    with torch.no_grad():  # a corrupt teacher at P5 only: the all-level gap (the reward) is NaN
        for parameter in env.teacher.fpn.layer_blocks[3].parameters():
            parameter.fill_(math.nan)
    _reset(env, seed=7)
    step = env.state.step
    # no slot distils P5, so the update itself would be finite: gap_drop takes it, the value
    # signal (all pairs, before the update) stops it first
    with pytest.raises(DivergenceError) as caught:
        env.step({agent: subset_to_index(("P3",)) for agent in env.agents})
    error = caught.value
    assert error.phase == ENV_PHASE and error.step == step + 1
    assert error.term == term and math.isnan(error.value)
    assert env.state.step == step + int(updated)
    assert "\n" not in str(error)
