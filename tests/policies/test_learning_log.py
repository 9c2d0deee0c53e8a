"""Phase 2's learning log: TensorBoard ``policy/...`` scalars and policy_learning.json survive a
resume, start over with the policy, and forward the env's value signal generically."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from policies.learning_log import PolicyLearningLog, policy_scalars


def _summary(iteration: int, **extra) -> dict:
    """An iteration summary with the keys ``ppo_setup.iteration_summary`` writes."""
    return {
        "iteration": iteration,
        "episode_return_mean": 0.5 * iteration,
        "learner/policy_loss": -0.01 * iteration,
        "learner/vf_loss": 1.0 / iteration,
        "learner/entropy": 2.7 - 0.1 * iteration,
        "learner/mean_kl_loss": 0.02,
        "learner/vf_explained_var": math.nan,
        "learner/total_loss": None,  # a NaN that went through JSON
        "level_selection/rate_P2": 0.25,
        "level_selection/rate_P3": 0.5,
        "level_selection/rate_P4": 0.75,
        "level_selection/rate_P5": 1.0,
        "level_selection/levels_per_decision": 2.5,
        "level_selection_env/mean_kd_gap": 3.0,
        "time_s": 1.5,
        **extra,
    }


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file in ``folder``, by tag, in step order (a step written
    twice appears twice). Each file is read on its own: TensorBoard reads a folder's files in
    name order, and the names of two writers opened in the same second order by a process-wide
    counter as text ('10' before '9'), so a folder read would purge steps it sees out of order
    (this test failed now and then in the full suite, where the counter passes 9 or 99)."""
    merged: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            merged.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return {tag: sorted(values) for tag, values in merged.items()}


def test_policy_scalars_map_the_summary_and_forward_value_keys():
    scalars = policy_scalars(
        _summary(
            2,
            **{
                "level_selection_env/value_mean/P2": 0.4,
                "level_selection_env/value_loss": 9.0,  # would clash with the critic's loss
                "level_selection_env/value_std": math.inf,
                "level_selection/value_mean": 7.0,  # per-step infos: not the env's metrics()
            },
        )
    )
    assert scalars["iteration"] == 2.0
    assert scalars["policy/return"] == 1.0
    assert scalars["policy/policy_loss"] == -0.02 and scalars["policy/value_loss"] == 0.5
    assert scalars["policy/entropy"] == 2.5 and scalars["policy/kl"] == 0.02
    assert [scalars[f"policy/selection_rate_P{k}"] for k in (2, 3, 4, 5)] == [0.25, 0.5, 0.75, 1]
    assert scalars["policy/value_mean/P2"] == 0.4
    assert scalars["policy/env_value_loss"] == 9.0
    assert "policy/vf_explained_var" not in scalars and "policy/total_loss" not in scalars
    assert "policy/value_std" not in scalars and "policy/value_mean" not in scalars
    assert "policy/mean_kd_gap" not in scalars


def test_log_writes_every_iteration_and_a_resume_continues_it(tmp_path):
    json_path, tb_dir = tmp_path / "policy_learning.json", tmp_path / "tb"
    log = PolicyLearningLog(json_path, tb_dir)
    history: list[dict] = []
    log(list(history))
    for iteration in (1, 2):
        history.append(_summary(iteration))
        log(list(history))
        saved = json.loads(json_path.read_text())["history"]
        assert [h["iteration"] for h in saved] == list(range(1, iteration + 1))
    log.close()
    assert saved[0]["learner/vf_explained_var"] is None  # NaN kept as JSON null

    # a resumed run: the restored history first, then one more iteration
    log = PolicyLearningLog(json_path, tb_dir)
    log(list(history))
    history.append(_summary(3))
    log(list(history))
    log.close()
    saved = json.loads(json_path.read_text())["history"]
    assert [h["iteration"] for h in saved] == [1, 2, 3]
    scalars = _scalars(tb_dir)
    assert scalars["policy/return"] == [(1, 0.5), (2, 1.0), (3, 1.5)]  # none written twice
    assert [step for step, _ in scalars["policy/kl"]] == [1, 2, 3]
    assert {"policy/policy_loss", "policy/value_loss", "policy/entropy"} <= set(scalars)
    assert {f"policy/selection_rate_P{k}" for k in (2, 3, 4, 5)} <= set(scalars)

    # PPO starts over (another policy): the old curves go, the new one starts at iteration 1
    log = PolicyLearningLog(json_path, tb_dir)
    log([])
    log([_summary(1, episode_return_mean=-4.0)])
    log.close()
    assert _scalars(tb_dir)["policy/return"] == [(1, -4.0)]
    assert len(json.loads(json_path.read_text())["history"]) == 1


def test_a_resume_without_event_files_rewrites_the_restored_iterations(tmp_path):
    log = PolicyLearningLog(tmp_path / "p.json", tmp_path / "tb")
    log([_summary(1), _summary(2)])
    log.close()
    assert [step for step, _ in _scalars(tmp_path / "tb")["policy/return"]] == [1, 2]
