"""Device, seeding, threads and mixed precision: the runtime knobs every phase shares."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from rlpkd.config import RuntimeConfig
from rlpkd.errors import ConfigError

__all__ = [
    "resolve_device",
    "seed_everything",
    "configure_runtime",
    "autocast_for",
    "cpu_autocast",
    "eval_mode",
]

_CPU_AUTOCAST = False
"""Whether ``autocast_for`` also autocasts on CPU (only inside ``cpu_autocast``)."""


def resolve_device(name: str, cuda_available: bool | None = None) -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a ConfigError.
    ``cuda_available``: what torch reports (``torch.cuda.is_available()``) unless given."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda_available else "cpu")
    if name.startswith("cuda") and not cuda_available:
        raise ConfigError(f"runtime.device is {name!r} but no CUDA GPU is visible; use 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"runtime.device {name!r} is not a torch device") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_runtime(runtime: RuntimeConfig) -> torch.device:
    """Apply thread settings and return the device of this run."""
    if runtime.num_threads > 0:
        torch.set_num_threads(runtime.num_threads)
    device = resolve_device(runtime.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op context on CPU (except inside
    ``cpu_autocast``)."""
    if enabled and (device.type == "cuda" or _CPU_AUTOCAST):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cpu_autocast() -> Iterator[None]:
    """Inside, ``runtime.amp`` autocasts to bf16 on CPU too, exactly where it would on CUDA: a
    check of the bf16 path on a machine without a GPU (``experiments.full_size_path``). Runs
    never enter it: bf16 on most CPUs is slower than fp32."""
    global _CPU_AUTOCAST
    previous, _CPU_AUTOCAST = _CPU_AUTOCAST, True
    try:
        yield
    finally:
        _CPU_AUTOCAST = previous


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm on running statistics) inside, each module's own mode restored after."""
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)
