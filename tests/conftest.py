"""Shared fixtures and helpers: tiny detectors, a tiny embedded dataset (generated once per
session), a real-COCO-shaped file, a local Ray, tiny run configs, and running a script."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from rlpkd.config import Config, ModelConfig, RLConfig, load_config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.data.embedded import ensure_embedded_dataset
from rlpkd.flops.kd_flops import FlopsModel, flops_model_from_config
from rlpkd.models.detector import PyramidDetector, build_detector
from rlpkd.models.factory import build_teacher
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.training.distill_run import distill_student

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = (4.0, 8.0, 16.0)


def fresh_local_ray() -> None:
    """A local Ray with 2 CPUs, no dashboard (explicit CPUs: PPO hangs on defaults); a Ray that
    another module's test left running, with other resources, is shut down first."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def ray_session():
    """``fresh_local_ray()`` for the module's tests, with the policy tests' toy env registered."""
    from tests.policies import register_toy_env

    fresh_local_ray()
    register_toy_env()
    yield
    ray.shutdown()


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


def two_box_batch(nan_box: bool = False, seed: int = 5) -> DetectionBatch:
    """Two random 64×64 images (from ``seed``) with one box each, labels 1 and 0; ``nan_box``
    makes the second box's x2 NaN."""
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0]], [[20.0, 30.0, 28.0, 38.0]]])
    if nan_box:
        boxes[1, 0, 2] = math.nan
    return DetectionBatch(
        images=torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)),
        boxes=boxes,
        labels=torch.tensor([[1], [0]]),
        image_ids=torch.tensor([1, 2]),
        scales=torch.ones(2),
    )


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


@pytest.fixture(scope="module")
def coco_fixture(tmp_path_factory):
    """The annotation file shaped like real COCO (tests/data/coco_fixture.py), written once per
    module."""
    from tests.data.coco_fixture import write_coco_fixture

    return write_coco_fixture(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def coco_dataset(coco_fixture):
    """``coco_fixture`` as an evaluation-mode dataset."""
    return coco_fixture.dataset()


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


def tiny_distillation_inputs(
    config: Config,
) -> tuple[DetectionDatasets, PyramidDetector, FlopsModel]:
    """What a student run of ``config`` distils from: its datasets, a frozen untrained teacher
    (built with seed 0) and its FLOPs model."""
    datasets = build_datasets(config.data, progress=False)
    torch.manual_seed(0)
    teacher = freeze_teacher(build_teacher(config, datasets.num_classes))
    return datasets, teacher, flops_model_from_config(config, datasets.num_classes)


def tiny_rl_config(config: Config, decisions: int = 16, **rl) -> Config:
    """``config`` with a tiny Phase 2: 4 slots, 2-step episodes, 2 iterations of one PPO epoch
    over ``decisions`` decisions (minibatches of half), an [8] policy, P3 as the static
    baseline and a bank of ``decisions`` contexts; ``rl`` overrides any of these."""
    values = dict(
        slots=4,
        episode_steps=2,
        iterations=2,
        train_batch_size=decisions,
        minibatch_size=decisions // 2,
        num_epochs=1,
        hidden_sizes=[8],
        static_baselines=["P3"],
        bank_decisions=decisions,
    )
    return dataclasses.replace(config, rl=RLConfig(**(values | rl)))


def run_script(
    script: str,
    *args: str,
    cwd: Path = REPO,
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python REPO/script *args`` in ``cwd`` with the repository on PYTHONPATH, its output
    captured as text; ``env`` replaces this process's environment (PYTHONPATH still added)."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The script's only stderr line, after asserting it exited 2 with ``error: ...`` holding
    every needle."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
