"""Shared fixtures: tiny detectors and a tiny embedded dataset (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from rlpkd.config import ModelConfig, load_config
from rlpkd.data.embedded import ensure_embedded_dataset
from rlpkd.models.detector import build_detector
from rlpkd.training.distill_run import distill_student

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = (4.0, 8.0, 16.0)


def fresh_local_ray() -> None:
    """A local Ray with 2 CPUs, no dashboard (explicit CPUs: PPO hangs on defaults); a Ray that
    another module's test left running, with other resources, is shut down first."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_teacher():
    torch.manual_seed(0)
    return build_detector(ModelConfig(18, 0.25, 32, 1), 3, THRESHOLDS)


@pytest.fixture
def tiny_student():
    torch.manual_seed(1)
    return build_detector(ModelConfig(18, 0.125, 16, 1), 3, THRESHOLDS)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_embedded_dataset(root, 24, 12, 64, 0, "mixed", progress=False)
    return root


def tiny_overrides(data_root) -> list[str]:
    """``--set`` overrides of debug.yaml for the tiny data: 24/12 images, batches of 8, one
    teacher epoch, no progress bars (every tiny config and tiny script run starts from these)."""
    return [
        f"data.root={data_root}",
        "data.num_train=24",
        "data.num_val=12",
        "student_schedule.batch_size=8",
        "teacher_schedule.batch_size=8",
        "teacher_schedule.epochs=1",
        "runtime.progress=false",
    ]


@pytest.fixture
def tiny_config(tiny_data_root, tmp_path):
    return load_config(
        REPO / "configs" / "debug.yaml",
        [*tiny_overrides(tiny_data_root), f"runtime.out={tmp_path / 'run'}"],
    )


def distil_on_cpu(config, datasets, teacher, selector, flops, **options):
    """``distill_student`` of a fresh student on the CPU with seed 0, no progress bar and the
    FLOPs model's subset costs; returns what it returns (``options``: e.g. ``on_step``)."""
    return distill_student(
        config,
        datasets,
        teacher,
        selector,
        seed=0,
        device=torch.device("cpu"),
        subset_kd_flops=flops.subset_kd_flops(),
        progress=False,
        **options,
    )
