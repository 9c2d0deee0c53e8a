"""GPU placement of sweep trials, proven on a CPU machine: a local Ray node declares one logical
GPU (``ray.init(num_gpus=1)``), four trials of ``sweep.trial_gpus=0.25`` share it at once, each
sees the GPU id Ray assigned, and, CUDA being unavailable, each trains on the CPU and says so."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import ray
import torch

from experiments.tune.sweep import run_sweep
from experiments.tune.trial_placement import trial_device
from rlpkd.config import load_config
from rlpkd.errors import ConfigError
from rlpkd.rundir import read_json
from tests.conftest import REPO

SEEDS = (0, 1, 2, 3)
TRIALS = tuple(f"baseline-none-seed{seed}" for seed in SEEDS)
NO_CUDA_NOTE = "Ray assigned GPU 0 but CUDA is unavailable here: trained on CPU"
STUDENT_EPOCHS = 30
"""Long enough that every trial is still training when the last one starts (see the test)."""


@pytest.fixture(scope="module")
def logical_gpu_ray():
    """A local Ray node with 4 logical CPUs (more than the machine's cores: Ray only counts
    them) and 1 logical GPU; ``run_sweep`` keeps a Ray this process already runs."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_four_quarter_gpu_trials_share_one_gpu_at_once(make_sweep_config, logical_gpu_ray):
    config = make_sweep_config(
        "sweep.baselines=[none]",
        f"sweep.seeds=[{','.join(str(seed) for seed in SEEDS)}]",
        "sweep.trial_gpus=0.25",
        "sweep.trial_cpus=1",
        f"student_schedule.epochs={STUDENT_EPOCHS}",
    )
    outcome = run_sweep(config, progress=False)

    assert outcome["statuses"] == dict.fromkeys(TRIALS, "TERMINATED"), outcome
    sweep = Path(config.runtime.out)
    metrics = {t: read_json(sweep / "trials" / t / "metrics.json") for t in TRIALS}
    # without CUDA (this test's point) a trial trains on the CPU and says why
    device, note = ("cuda:0", "") if torch.cuda.is_available() else ("cpu", NO_CUDA_NOTE)
    for trial_id, trial in metrics.items():
        # one GPU, a quarter each: every trial was given GPU 0, and only it is visible
        assert trial["gpu_ids"] == [0] and trial["cuda_visible_devices"] == "0", trial_id
        assert trial["device"] == device and trial["device_note"] == note, trial_id
        config_text = (sweep / "trials" / trial_id / "config.yaml").read_text()
        assert f"device: {device}" in config_text, trial_id
    # All four ran at once. Each interval starts when the trial's code starts, after its actor
    # has started and imported the platform; on 2 cores those start-ups are spread over a few
    # seconds. Each trial trains STUDENT_EPOCHS epochs, about twice that spread: both are CPU
    # work on the same cores, so a busier machine stretches them alike.
    starts = {t: m["trial_start_unix_s"] for t, m in metrics.items()}
    ends = {t: m["trial_end_unix_s"] for t, m in metrics.items()}
    first = min(starts.values())
    intervals = {t: (round(starts[t] - first, 2), round(ends[t] - first, 2)) for t in TRIALS}
    assert max(starts.values()) < min(ends.values()), f"not all at once (s): {intervals}"


def test_a_trial_without_gpus_trains_on_the_cpu_whatever_runtime_device_says(tiny_config):
    config = dataclasses.replace(
        tiny_config, runtime=dataclasses.replace(tiny_config.runtime, device="cuda")
    )
    placement = trial_device(config, [])
    assert placement.device == torch.device("cpu") and placement.note == ""


def test_a_trial_given_a_gpu_follows_it_or_says_why_not():
    config = load_config(REPO / "configs" / "debug.yaml", ["sweep.trial_gpus=0.25"])
    placement = trial_device(config, [0])
    if torch.cuda.is_available():
        assert placement.device == torch.device("cuda", 0) and placement.note == ""
    else:
        assert placement.device == torch.device("cpu") and "CUDA is unavailable" in placement.note


@pytest.mark.slow
def test_rl_trials_without_a_gpu_for_their_local_learner_fail_before_the_sweep_starts(
    make_sweep_config, logical_gpu_ray
):
    # rl.num_learners=0: PPO learns inside the RL trial, which holds no GPU (trial_gpus 0), so
    # RLlib would silently learn on the CPU although the cluster has the GPU
    config = make_sweep_config("sweep.rl_lams=[0.1]", "rl.num_gpus_per_learner=1")
    with pytest.raises(ConfigError, match="holds no GPU") as error:
        run_sweep(config, progress=False)
    assert "\n" not in str(error.value)
    assert not Path(config.runtime.out).exists()
