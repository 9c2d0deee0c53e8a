"""The val-size measurement: paired differences of two methods' students on val subsets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.val_size import val_size_markdown, val_size_study
from rlpkd.checkpoint_io import save_checkpoint_atomic
from rlpkd.data.build import build_datasets
from rlpkd.models.factory import build_student


def test_every_size_gets_its_draws_and_the_full_set_one(tiny_config, tmp_path):
    run = tmp_path / "run"
    classes = build_datasets(tiny_config.data, progress=False).num_classes
    for method, seed in [(m, s) for m in ("a", "b") for s in (0, 1)]:
        torch.manual_seed(hash((method, seed)) % 1000)
        student = build_student(tiny_config, classes)
        save_checkpoint_atomic(
            run / "students" / f"{method}-seed{seed}" / "checkpoints" / "student.pt",
            {"model": student.state_dict()},
        )
    record = val_size_study(tiny_config, run, ("a", "b"), [0, 1], [6, 12], draws=3)
    rows = {row["val_images"]: row for row in record["rows"]}
    assert rows[6]["draws"] == 3 and rows[12]["draws"] == 1  # the whole val set: one draw
    assert rows[12]["evaluation_noise_std"] == 0.0
    assert "| 6 | 3 |" in val_size_markdown(record)
    with pytest.raises(ValueError, match="num_val"):
        val_size_study(tiny_config, run, ("a", "b"), [0], [100])
    assert Path(run).is_dir()
