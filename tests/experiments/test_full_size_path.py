"""The full-size path check (scripts/full_size_check.py) on photos in COCO's format, at a tiny
size: every step runs in both precisions and the KD losses agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.coco_photos import COCO_CATEGORY_IDS, PHOTO_SIZES, write_coco_photos
from experiments.full_size_path import PRECISIONS, StepResult, compare_precisions
from rlpkd.config import load_config
from rlpkd.data.build import build_datasets

REPO = Path(__file__).resolve().parents[2]
STEPS = ("teacher_forward", "kd_step_all_levels", "env_step", "policy_guided_step")


def test_photos_load_as_coco_with_real_category_ids(tmp_path):
    photos = write_coco_photos(tmp_path, num_train=5, num_val=2, seed=1)
    document = json.loads(photos.train_annotations.read_text())
    sizes = [(image["width"], image["height"]) for image in document["images"]]
    assert sizes == [PHOTO_SIZES[i % len(PHOTO_SIZES)] for i in range(5)]
    assert {c["id"] for c in document["categories"]} == set(COCO_CATEGORY_IDS)
    assert all(1 <= a["category_id"] <= 90 for a in document["annotations"])
    config = load_config(None, [*photos.overrides(), "data.image_size=96", "data.preload=false"])
    datasets = build_datasets(config.data, progress=False)
    assert (len(datasets.train), len(datasets.val), datasets.num_classes) == (5, 2, 80)
    sample = datasets.train[2]  # 1024 x 768: letterboxed down to 96 px
    assert sample.image.shape[-2:] == (96, 96)


def test_compare_precisions_flags_a_disagreement():
    fp32 = [StepResult("kd", "fp32", 1.0, 1.0, {"loss": 2.0, "other": 1.0})]
    bf16 = [StepResult("kd", "bf16", 1.0, 1.0, {"loss": 2.02, "other": 1.5})]
    rows = {row.value: row for row in compare_precisions(fp32, bf16)}
    assert rows["loss"].agrees and abs(rows["loss"].rel_diff - 0.01) < 1e-9
    assert not rows["other"].agrees


@pytest.mark.slow
def test_full_size_check_runs_every_step_in_both_precisions(tmp_path):
    out = tmp_path / "check"
    command = [
        sys.executable,
        str(REPO / "scripts" / "full_size_check.py"),
        "--config",
        str(REPO / "configs" / "debug.yaml"),
        "--out",
        str(out),
        "--photos",
        "6",
        "--set",
        "data.image_size=64",
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    document = json.loads((out / "full_size_check.json").read_text())
    done = [(step["step"], step["precision"]) for step in document["steps"]]
    assert done == [(step, precision) for precision in PRECISIONS for step in STEPS]
    assert all(step["peak_memory_mib"] > 0 for step in document["steps"])
    kd_rows = [row for row in document["parity"] if row["step"] == "kd_step_all_levels"]
    assert {row["value"] for row in kd_rows} == {"total_loss", "detection_loss", "kd_raw_mean"}
    assert all(row["agrees"] for row in kd_rows), kd_rows
    env = next(s for s in document["steps"] if s["step"] == "env_step")
    assert {f"value_{level}" for level in ("P2", "P3", "P4", "P5")} <= set(env["values"])
