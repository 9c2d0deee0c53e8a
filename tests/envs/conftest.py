"""The live env's tiny set-up, shared by the env and decision-bank tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlpkd.config import config_to_dict, load_config
from rlpkd.data.build import build_datasets
from rlpkd.models.factory import build_teacher

REPO = Path(__file__).resolve().parents[2]
SLOTS = 3


@pytest.fixture(scope="module")
def env_config(tiny_data_root, tmp_path_factory) -> dict:
    """A debug config (64 px, 24 training images, 6-step student schedule) and a saved teacher."""
    tmp = tmp_path_factory.mktemp("env")
    config = load_config(
        REPO / "configs" / "debug.yaml",
        [
            f"data.root={tiny_data_root}",
            "data.num_train=24",
            "data.num_val=12",
            "student_schedule.batch_size=4",
            "runtime.progress=false",
            "runtime.device=cpu",
            f"rl.slots={SLOTS}",
            "rl.episode_steps=2",
            "rl.snapshot_fractions=[0.0, 0.2]",
            "rl.heldout_size=4",
        ],
    )
    datasets = build_datasets(config.data, progress=False)
    torch.manual_seed(0)
    teacher = build_teacher(config, datasets.num_classes)
    torch.save({"model": teacher.state_dict()}, tmp / "teacher.pt")
    return {
        "config": config_to_dict(config),
        "teacher_checkpoint": str(tmp / "teacher.pt"),
        "snapshot_dir": str(tmp / "snapshots"),
        "seed": 0,
    }
