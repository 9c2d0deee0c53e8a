"""The planted-rule experiment: its score, its files and its refusal of a config without a rule."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from envs.observation import observation_dim, observation_features
from envs.snapshots import build_snapshot_pool
from experiments.planted_rule import run_planted_experiment
from policies.level_policy_module import build_level_module
from policies.planted_rule_score import planted_rule_score
from rlpkd.data.build import build_datasets
from rlpkd.levels import subset_to_index
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from tests.conftest import REPO
from tests.dir_snapshot import directory_snapshot


def _planted(config, planted_class=1):
    distill = dataclasses.replace(config.distill, planted_class=planted_class)
    return dataclasses.replace(config, distill=distill)


def _module_reading_class(num_classes, planted_class, strength):
    """A policy whose only input is the planted class's share of the boxes: ``strength`` > 0
    moves probability to {P4, P5} (no P2, P3) on images holding the class; 0 ignores it."""
    module = build_level_module(observation_dim(num_classes), [4])
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    encoder, policy_head = linears[0], next(m for m in linears if m.out_features == 16)
    with torch.no_grad():
        for layer in (encoder, policy_head):
            layer.weight.zero_()
            layer.bias.zero_()
        encoder.weight[0, observation_features(num_classes).index(f"class_{planted_class}")] = 10.0
        policy_head.weight[subset_to_index(("P4", "P5")), 0] = strength
    return module


def test_score_of_a_static_and_of_a_rule_following_policy(tiny_config, tmp_path):
    config = _planted(tiny_config)
    datasets = build_datasets(config.data, progress=False)
    teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    snapshots = build_snapshot_pool(config, datasets, teacher, tmp_path / "pool")
    static = planted_rule_score(
        config, datasets, _module_reading_class(datasets.num_classes, 1, 0.0), snapshots
    )
    follower = planted_rule_score(
        config, datasets, _module_reading_class(datasets.num_classes, 1, 20.0), snapshots
    )
    # a policy that ignores the sample ties every pair (chance); one that reads the rule ranks
    # every planted pair below every clean one
    assert static.auroc_planted_levels == pytest.approx(0.5)
    assert follower.auroc_planted_levels == pytest.approx(1.0)
    assert static.auroc_within_level == pytest.approx(0.5)
    assert follower.auroc_within_level == pytest.approx(1.0)
    for score in (static, follower):
        per_level = list(score.auroc_per_level.values())
        assert score.auroc_within_level == pytest.approx(sum(per_level) / len(per_level))
    assert follower.selection_planted < follower.selection_clean_same_levels
    assert static.decisions == len(snapshots) * len(datasets.val)
    assert 0.0 < static.planted_share < 1.0


@pytest.mark.slow
def test_planted_experiment_writes_its_report(tiny_config):
    config = _planted(tiny_config)
    record = run_planted_experiment(config, ["value", "gap_drop"], [0])
    out = Path(config.runtime.out)
    saved = json.loads((out / "planted_rule.json").read_text())
    assert [(r["reward"], r["seed"]) for r in saved["runs"]] == [("value", 0), ("gap_drop", 0)]
    for run in record["runs"]:
        assert 0.0 <= run["auroc_planted_levels"] <= 1.0
        assert 0.0 <= run["selection_planted"] <= 1.0
    assert "AUROC" in (out / "planted_rule.md").read_text()
    assert (out / "value-seed0" / "checkpoints" / "policy_weights.pt").is_file()


def test_script_refuses_a_config_without_a_planted_rule(tiny_config, tmp_path):
    out = tmp_path / "previous"
    out.mkdir()
    (out / "planted_rule.json").write_text("{}")
    before = directory_snapshot(out)
    result = subprocess.run(
        # --debug plants configs/planted.yaml's rule unless the config says otherwise
        [sys.executable, "scripts/planted_rule.py", "--debug", "--out", str(out)]
        + ["--set", "distill.planted_class=-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "distill.planted_class is -1" in result.stderr
    assert directory_snapshot(out) == before


def test_credit_means_are_the_value_signal_of_the_planted_and_clean_pairs(tiny_config, tmp_path):
    """planted_credit_auroc's means, recomputed from ``level_values`` on the same batches."""
    from envs.snapshots import load_snapshot
    from policies.planted_rule_score import planted_credit_auroc
    from rlpkd.data.build import heldout_split
    from rlpkd.data.coco import build_dataloader, collate_detection
    from rlpkd.distill.level_value import level_values
    from rlpkd.distill.planted import planted_pairs
    from rlpkd.report.auroc import auroc

    config = _planted(tiny_config)
    config = dataclasses.replace(
        config, distill=dataclasses.replace(config.distill, planted_corruption="negate")
    )
    datasets = build_datasets(config.data, progress=False)
    teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    snapshots = build_snapshot_pool(config, datasets, teacher, tmp_path / "pool")
    credit = planted_credit_auroc(config, datasets, teacher, snapshots)

    split = heldout_split(datasets, config.search.holdout_fraction, config.runtime.seed)
    heldout = collate_detection(
        [split.val[i] for i in range(min(config.rl.heldout_size, len(split.val)))]
    )
    for path in snapshots:
        state = load_snapshot(path, config, datasets.num_classes, torch.device("cpu"))
        values, labels = [], []
        for batch in build_dataloader(datasets.val, 16, shuffle=False, seed=0):
            signal = level_values(state.distillation_state(teacher), batch, heldout)
            values.append(signal.values.detach().double())
            labels.append(planted_pairs(batch.labels, 1, ("P2", "P3")))
        v, planted = torch.cat(values), torch.cat(labels)
        unit = v.sum(dim=1).abs().mean()
        clean = ~planted
        clean[:, 2:] = False
        step = f"step_{state.step}"
        assert credit[f"planted_mean_{step}"] == pytest.approx((v[planted].mean() / unit).item())
        assert credit[f"clean_mean_{step}"] == pytest.approx((v[clean].mean() / unit).item())
        assert credit[step] == pytest.approx(auroc(-v[:, :2], planted[:, :2]))
