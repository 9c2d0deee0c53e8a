"""Which device a run that Ray placed trains on: the GPU Ray assigned, or a stated fallback.

Ray gives a task or actor its GPUs (``ray.get_gpu_ids()``) and makes them the only ones visible
to it (``CUDA_VISIBLE_DEVICES``), so ``cuda:0`` there is the first assigned GPU. A node may
declare GPUs that torch cannot use (``ray.init(num_gpus=1)`` on a CPU machine, or a CPU-only
torch build); the run then trains on the CPU and says so in its metrics (``device_note``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlpkd.runtime import resolve_device

__all__ = ["DevicePlacement", "placed_device"]


@dataclass(frozen=True)
class DevicePlacement:
    """The device a run trains on, and ``note``: why it is not the GPU Ray assigned or not
    ``runtime.device`` ('' when it is both)."""

    device: torch.device
    note: str = ""


def _gpus_text(gpu_ids: Sequence[int | str]) -> str:
    return f"GPU{'s' if len(gpu_ids) > 1 else ''} {', '.join(str(i) for i in gpu_ids)}"


def placed_device(
    requested: str, assigned_gpu_ids: Sequence[int | str], cuda_available: bool
) -> DevicePlacement:
    """The device of a run that Ray placed: it follows Ray's GPU assignment.

    - No GPU assigned (outside Ray, or a trial that asked for none): ``runtime.device``
      decides ('auto': CUDA when available, else the CPU).
    - A GPU assigned, ``runtime.device`` 'auto' or 'cuda[:N]', CUDA available: ``cuda:0``, the
      first assigned GPU (a 'cuda:N' other than 0 is noted: only Ray's GPUs are visible).
    - A GPU assigned, CUDA unavailable: the CPU, with the note "Ray assigned GPU 0 but CUDA is
      unavailable here: trained on CPU".
    - A GPU assigned and ``runtime.device`` another device (e.g. 'cpu'): that device, noted.

    Args:
        requested: ``runtime.device`` ('auto', 'cpu', 'cuda', 'cuda:1', ...).
        assigned_gpu_ids: the GPU ids Ray assigned to this process (empty outside Ray).
        cuda_available: whether torch sees a CUDA device here (``torch.cuda.is_available()``).

    Raises:
        ConfigError: ``requested`` is not a torch device, or names CUDA with no GPU assigned
            and no CUDA visible.
    """
    if not assigned_gpu_ids:
        return DevicePlacement(resolve_device(requested, cuda_available))
    assigned = f"Ray assigned {_gpus_text(assigned_gpu_ids)}"
    if requested != "auto" and not requested.startswith("cuda"):
        device = resolve_device(requested, cuda_available)
        return DevicePlacement(
            device, f"{assigned} but runtime.device is {requested!r}: trained on {device}"
        )
    if not cuda_available:
        return DevicePlacement(
            torch.device("cpu"), f"{assigned} but CUDA is unavailable here: trained on CPU"
        )
    device = torch.device("cuda", 0)
    if requested not in ("auto", "cuda", "cuda:0"):
        return DevicePlacement(
            device,
            f"{assigned}, visible here as cuda:0: runtime.device {requested!r} became cuda:0",
        )
    return DevicePlacement(device)
