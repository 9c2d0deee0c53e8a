"""The device of a run that Ray placed follows Ray's GPU assignment, or says why not."""

from __future__ import annotations

import pytest
import torch

from rlpkd.device_placement import placed_device
from rlpkd.errors import ConfigError

NO_CUDA_NOTE = "Ray assigned GPU 0 but CUDA is unavailable here: trained on CPU"


@pytest.mark.parametrize("requested", ["auto", "cuda", "cuda:0"])
def test_an_assigned_gpu_with_cuda_is_cuda_0_without_a_note(requested):
    placement = placed_device(requested, [0], cuda_available=True)
    assert placement.device == torch.device("cuda", 0) and placement.note == ""


@pytest.mark.parametrize("requested", ["auto", "cuda", "cuda:1"])
def test_an_assigned_gpu_without_cuda_falls_back_to_the_cpu_and_says_so(requested):
    placement = placed_device(requested, [0], cuda_available=False)
    assert placement.device == torch.device("cpu")
    assert placement.note == NO_CUDA_NOTE


def test_the_note_names_every_assigned_gpu():
    placement = placed_device("auto", [2, 3], cuda_available=False)
    assert placement.note.startswith("Ray assigned GPUs 2, 3 but CUDA is unavailable")


def test_a_cuda_index_other_than_0_becomes_the_assigned_gpu_and_is_noted():
    # Ray shows a trial only its own GPUs, so cuda:1 would not be the assigned GPU 5 (or exist)
    placement = placed_device("cuda:1", [5], cuda_available=True)
    assert placement.device == torch.device("cuda", 0)
    assert "GPU 5" in placement.note and "'cuda:1'" in placement.note


def test_an_explicit_cpu_beside_an_assigned_gpu_is_kept_and_noted():
    placement = placed_device("cpu", [0], cuda_available=True)
    assert placement.device == torch.device("cpu")
    assert placement.note == "Ray assigned GPU 0 but runtime.device is 'cpu': trained on cpu"


@pytest.mark.parametrize(
    "requested, cuda_available, expected",
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_without_an_assigned_gpu_runtime_device_decides(requested, cuda_available, expected):
    placement = placed_device(requested, [], cuda_available)
    assert placement.device == torch.device(expected) and placement.note == ""


@pytest.mark.parametrize("requested", ["cuda", "not-a-device"])
def test_without_an_assigned_gpu_an_unusable_device_is_one_line(requested):
    with pytest.raises(ConfigError, match="runtime.device") as error:
        placed_device(requested, [], cuda_available=False)
    assert "\n" not in str(error.value)
