"""Fingerprints keep their values: run directories store them and ``--resume`` compares them.

The pinned values were computed by the per-artifact hash functions that ``rlpkd.fingerprint``
replaced. A new field in a fingerprinted config section changes them legitimately (every stored
artifact is then recomputed once); update the pins only for such a change. The policy and RL
trial pins changed with issue 11's rl section (``reward``, ``heldout_size``, ``reward_baseline``;
``flops_budget`` gone): a policy learnt from the old reward must not be reused. The planted rule's
``distill`` fields are hashed only when it is on, and ``rl.policy_head`` only when it is not
``joint``, so the other pins did not move. The RL trial pins changed again when RL trials began
to train their verification controls (``controls: shuffled+random``): a trial finished without
them must run again to have them; and again when those controls became the table's entries
(``controls: random-subsets+shuffled``, random subsets held to the policy's cost in every batch).
"""

from __future__ import annotations

import dataclasses

import pytest

from envs.snapshots import snapshot_fingerprint
from experiments.policy_learning import policy_fingerprint
from experiments.tune.trials import TrialSpec, trial_fingerprint
from rlpkd.config import Config, config_from_dict
from rlpkd.fingerprint import DATA_LOCATION_KEYS, file_digest, fingerprint
from rlpkd.training.student_phase import student_fingerprint
from rlpkd.training.teacher_phase import teacher_fingerprint

VALUES = {
    "data": {
        "num_train": 64,
        "num_val": 32,
        "image_size": 64,
        "level_thresholds": [4.0, 8.0, 16.0],
        "root": "/somewhere",
    },
    "teacher": {"depth": 18, "width": 0.25, "fpn_channels": 32, "head_convs": 1},
    "student": {"depth": 18, "width": 0.125, "fpn_channels": 16, "head_convs": 1},
    "teacher_schedule": {"epochs": 2, "batch_size": 16, "lr": 0.002, "warmup_steps": 2},
    "student_schedule": {"epochs": 1, "batch_size": 16, "lr": 0.002, "warmup_steps": 2},
    "distill": {"loss": "pkd", "loss_params": {"temperature": 2.0}},
    "rl": {"lam": 0.3, "iterations": 2, "hidden_sizes": [16], "static_baselines": ["P3"]},
    "search": {"gradient_steps": 4},
    "sweep": {"trial_gpus": 0.25},
    "runtime": {"seed": 3},
}
SPECS = {
    "rl": TrialSpec("rl-lam0.1-seed1", "rl", "rl λ=0.1", 1, lam=0.1),
    "nas": TrialSpec("darts-seed1", "nas", "darts", 1, search_method="darts"),
    "static": TrialSpec("static-P2-seed1", "static", "P2", 1, levels="P2"),
    "baseline": TrialSpec("baseline-random_0.5-seed1", "baseline", "random:0.5", 1, "random:0.5"),
}
PINNED = {
    "teacher": "8ef3d3e23946dd55",
    "student": "5964f2653b798d62",
    "snapshot": "0c42a89819b9c79d",
    # moved on purpose with rl.learner and the decision bank (issue 18): a policy PPO learnt
    # on the live env is not the policy of a config that learns on the bank
    "policy_cold": "08ad6b4c73aba4ca",
    "policy_warm": "46312c4bc6243e1c",
    "trial_rl_cold": "8f5ef86f2b44f319",
    "trial_rl_warm": "34755309a1d539a5",
    "trial_nas": "d123554c2a0d7a09",
    "trial_static": "ee17b812933881d7",
    "trial_baseline": "0236622f1eaafa30",
}


def _all_fingerprints(config: Config) -> dict[str, str]:
    return {
        "teacher": teacher_fingerprint(config),
        "student": student_fingerprint(config, 5, "P2,P4"),
        "snapshot": snapshot_fingerprint(config),
        "policy": policy_fingerprint(config),
        **{f"trial_{kind}": trial_fingerprint(spec, config) for kind, spec in SPECS.items()},
    }


@pytest.fixture
def warm_start(tmp_path):
    path = tmp_path / "meta.pt"
    path.write_bytes(b"meta-checkpoint bytes")
    return str(path)


def test_values_are_those_stored_in_existing_runs(warm_start):
    cold = _all_fingerprints(config_from_dict(VALUES))
    warm = _all_fingerprints(config_from_dict(VALUES | {"meta": {"warm_start": warm_start}}))
    for name in ("teacher", "student", "snapshot", "trial_nas", "trial_static", "trial_baseline"):
        assert cold[name] == warm[name] == PINNED[name], name
    assert cold["policy"] == PINNED["policy_cold"]
    assert warm["policy"] == PINNED["policy_warm"]
    assert cold["trial_rl"] == PINNED["trial_rl_cold"]
    assert warm["trial_rl"] == PINNED["trial_rl_warm"]


def test_where_the_data_lives_changes_no_fingerprint():
    base = config_from_dict(VALUES)
    moved = dataclasses.replace(
        base, data=dataclasses.replace(base.data, root="/elsewhere", preload=False, num_workers=3)
    )
    assert set(DATA_LOCATION_KEYS) == {"root", "preload", "num_workers"}
    assert _all_fingerprints(moved) == _all_fingerprints(base)


def test_sections_extra_and_dropped_keys_all_count():
    config = config_from_dict(VALUES)
    base = fingerprint(config, ["data", "rl"], {"seed": 1})
    assert len(base) == 16 and int(base, 16) >= 0
    assert fingerprint(config, ["data", "rl"], {"seed": 2}) != base
    assert fingerprint(config, ["data"], {"seed": 1}) != base
    assert fingerprint(config, {"data": "data", "policy": "rl"}, {"seed": 1}) != base
    assert fingerprint(config, ["data", "rl"], {"seed": 1}, drop={"rl": ["lam"]}) != base
    other_lam = dataclasses.replace(config, rl=dataclasses.replace(config.rl, lam=0.9))
    assert fingerprint(other_lam, ["data", "rl"], {"seed": 1}) != base
    assert fingerprint(other_lam, ["data", "rl"], {"seed": 1}, drop={"rl": ["lam"]}) == fingerprint(
        config, ["data", "rl"], {"seed": 1}, drop={"rl": ["lam"]}
    )
    with pytest.raises(ValueError, match="'rl'"):
        fingerprint(config, ["rl"], {"rl": 1})


def test_file_digest_hashes_bytes_not_paths(tmp_path):
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"same")
    second.write_bytes(b"same")
    assert file_digest(str(first)) == file_digest(str(second)) != str(first)
    assert file_digest("") == ""
    assert file_digest(str(tmp_path / "missing")) == str(tmp_path / "missing")


def test_a_planted_rule_changes_what_it_decides():
    base = config_from_dict(VALUES)
    planted = config_from_dict(VALUES | {"distill": {**VALUES["distill"], "planted_class": 1}})
    assert teacher_fingerprint(planted) == teacher_fingerprint(base)  # the teacher is unchanged
    assert student_fingerprint(planted, 5, "all") != student_fingerprint(base, 5, "all")
    negated = config_from_dict(
        VALUES
        | {"distill": {**VALUES["distill"], "planted_class": 1, "planted_corruption": "negate"}}
    )
    assert student_fingerprint(negated, 5, "all") != student_fingerprint(planted, 5, "all")
    # the snapshot pool trains with the true teacher (envs.snapshots.pool_config): shared
    assert snapshot_fingerprint(planted) == snapshot_fingerprint(base)
    assert snapshot_fingerprint(negated) == snapshot_fingerprint(base)
    assert policy_fingerprint(planted) != policy_fingerprint(base)


def test_a_factorised_policy_head_changes_the_policy_only():
    base = config_from_dict(VALUES)
    factorised = config_from_dict(VALUES | {"rl": {**VALUES["rl"], "policy_head": "factorised"}})
    assert policy_fingerprint(factorised) != policy_fingerprint(base)
    assert snapshot_fingerprint(factorised) == snapshot_fingerprint(base)
    assert student_fingerprint(factorised, 5, "all") == student_fingerprint(base, 5, "all")


def test_a_budget_pace_changes_phase_3_and_the_trials_not_the_policy():
    """Phase 2 does not read ``rl.budget_pace`` (its policy is reused across paces); a sweep's RL
    trial, whose students spend by it, does."""
    budgeted = config_from_dict(VALUES | {"rl": {**VALUES["rl"], "budget": 0.5}})
    paced = config_from_dict(
        VALUES | {"rl": {**VALUES["rl"], "budget": 0.5, "budget_pace": [2.0, 1.0]}}
    )
    assert policy_fingerprint(paced) == policy_fingerprint(budgeted)
    spec = SPECS["rl"]
    assert trial_fingerprint(spec, paced) != trial_fingerprint(spec, budgeted)
