"""Heatmap files exist and their counts match the decision log."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.data.size_bins import dominant_size_bin
from rlpkd.report.decision_log import DecisionLog, read_decisions
from rlpkd.viz.heatmaps import selection_tables
from tests.conftest import run_script


def _batch():
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 12.0, 12.0], [0.0, 0.0, 0.0, 0.0]],
            [[0.0, 0.0, 100.0, 110.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[0, 1, -1], [2, -1, -1], [-1, -1, -1]])
    return DetectionBatch(
        torch.zeros(3, 3, 8, 8), boxes, labels, torch.tensor([7, 8, 9]), torch.ones(3)
    )


def test_dominant_size_bin_uses_coco_areas():
    assert dominant_size_bin(torch.tensor([[0.0, 0, 10, 10]]), 1.0) == "small"
    assert dominant_size_bin(torch.tensor([[0.0, 0, 10, 10]]), 0.25) == "medium"  # 40x40 originally
    assert dominant_size_bin(torch.zeros(0, 4), 1.0) == "none"


@pytest.mark.slow
def test_heatmap_counts_match_the_decision_log(tmp_path):
    log = DecisionLog(tmp_path / "decisions.jsonl", ["a", "b", "c"], total_steps=4)
    masks = [
        torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool),
        torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=bool),
    ]
    for step, mask in enumerate(masks, start=1):
        log(step, _batch(), mask)
    records = read_decisions(log.path)
    assert len(records) == 6 and records[0]["classes"] == ["a", "b"]
    result = run_script("scripts/plot_heatmap.py", "--run", str(tmp_path), timeout_s=120)
    assert result.returncode == 0, result.stderr
    for key in ("size", "class", "progress"):
        assert (tmp_path / "plots" / f"selection_by_{key}.png").stat().st_size > 1000
    counts = json.loads((tmp_path / "plots" / "selection_counts.json").read_text())
    size = counts["size"]
    assert dict(zip(size["columns"], size["decisions"], strict=True)) == {
        "small": 2,
        "medium": 0,
        "large": 2,
        "none": 2,
    }
    # P2 chosen by the small-object sample twice, by the box-less sample once
    assert dict(zip(size["columns"], size["selected"]["P2"], strict=True)) == {
        "small": 2,
        "medium": 0,
        "large": 0,
        "none": 1,
    }
    assert sum(counts["progress"]["decisions"]) == 6
    assert counts["class"]["decisions"] == [2, 2, 2]
    assert counts["class"]["selected"]["P5"] == [0, 0, 2]


@pytest.mark.slow
def test_plot_heatmap_without_log_is_a_clear_error(tmp_path):
    result = run_script("scripts/plot_heatmap.py", "--run", str(tmp_path), timeout_s=120)
    assert result.returncode == 2 and "decisions.jsonl" in result.stderr


def test_regime_table_counts_the_logged_regimes(tmp_path):
    regimes = {7: "small-only", 8: "large-only", 9: "large-only"}
    log = DecisionLog(tmp_path / "decisions.jsonl", ["a", "b", "c"], 2, image_regimes=regimes)
    log(1, _batch(), torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool))
    records = read_decisions(log.path)
    assert [r["regime"] for r in records] == [regimes[int(i)] for i in _batch().image_ids]
    table = selection_tables(records, ["a", "b", "c"])["regime"]
    by_column = dict(zip(table.columns, table.decisions.tolist(), strict=True))
    assert by_column == dict(Counter(r["regime"] for r in records))
    # without regimes in the log there is no regime table
    plain = DecisionLog(tmp_path / "plain.jsonl", ["a", "b", "c"], 2)
    plain(1, _batch(), torch.ones(3, 4, dtype=bool))
    assert "regime" not in selection_tables(read_decisions(plain.path), ["a", "b", "c"])
