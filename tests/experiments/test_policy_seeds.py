"""Phase 2 over PPO seeds on one bank: a record per seed, the seeds' agreement, the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.policy_seeds import run_policy_seeds


@pytest.mark.slow
def test_policy_seeds_share_one_bank_and_report_their_agreement(tiny_config):
    rl = dataclasses.replace(
        tiny_config.rl, bank_decisions=16, iterations=2, train_batch_size=128, minibatch_size=64
    )
    config = dataclasses.replace(tiny_config, rl=rl)
    record = run_policy_seeds(config, [0, 1, 0])
    runs = record["runs"]
    assert [run["seed"] for run in runs] == [0, 1, 0]
    for run in runs:
        assert 1 <= run["selected_iteration"] <= 2 and run["verdict"] in (
            "did not learn",
            "learnt a per-sample choice",
        )
        assert 0.0 <= run["heldout_share_off_most_common"] <= 1.0
    # the same seed twice: the same weights, so the same choices on every held-out context
    assert runs[0]["weights_digest"] == runs[2]["weights_digest"]
    assert record["agreement"]["0-0"] == 1.0 and set(record["agreement"]) == {"0-1", "0-0", "1-0"}
    out = Path(config.runtime.out)
    saved = json.loads((out / "policy_seeds.json").read_text())
    assert saved["min_agreement"] == record["min_agreement"]
    report = (out / "policy_seeds.md").read_text()
    assert "| PPO seed |" in report and "agree on held-out contexts" in report
    # one bank for every seed
    banks = list((out / "checkpoints" / "snapshots").glob("decision_bank_*.npz"))
    assert len(banks) == 1
