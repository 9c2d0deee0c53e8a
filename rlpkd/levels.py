"""Pyramid levels P2-P5: names, strides, level-set parsing, per-sample masks and the subset
encoding (subset index i has bit j set when ``LEVELS[j]`` is chosen; 0 = none, 15 = all)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from rlpkd.errors import ConfigError

__all__ = [
    "LEVELS",
    "LEVEL_STRIDES",
    "NUM_LEVELS",
    "NUM_SUBSETS",
    "parse_levels",
    "levels_to_mask",
    "mask_to_levels",
    "subset_to_index",
    "index_to_subset",
    "all_subsets",
    "masks_to_subsets",
    "subsets_to_masks",
    "format_levels",
]

LEVELS: tuple[str, ...] = ("P2", "P3", "P4", "P5")
NUM_LEVELS = len(LEVELS)
LEVEL_STRIDES: dict[str, int] = {"P2": 4, "P3": 8, "P4": 16, "P5": 32}
NUM_SUBSETS = 2**NUM_LEVELS
"""How many level subsets there are (16): the actions of the level-selection policy."""

_LEVEL_BITS = torch.tensor([1 << i for i in range(NUM_LEVELS)])
"""[4] long: the value of ``LEVELS[i]``'s bit in a subset index."""


def parse_levels(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``none``, ``all``, ``P2,P4`` (or a list of names) into an ordered level tuple."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() in ("none", ""):
            return ()
        if text.lower() == "all":
            return LEVELS
        names = [part.strip().upper() for part in text.split(",") if part.strip()]
    else:
        names = [str(part).strip().upper() for part in spec]
    unknown = [n for n in names if n not in LEVELS]
    if unknown:
        raise ConfigError(
            f"unknown pyramid level(s) {', '.join(unknown)} in {spec!r}; "
            f"valid: none, all, or a comma list of {', '.join(LEVELS)}"
        )
    return tuple(level for level in LEVELS if level in names)


def levels_to_mask(levels: Iterable[str]) -> torch.Tensor:
    """A bool tensor [4] that is True at the given levels."""
    chosen = set(levels)
    return torch.tensor([level in chosen for level in LEVELS], dtype=torch.bool)


def mask_to_levels(mask: Sequence[bool] | torch.Tensor) -> tuple[str, ...]:
    """The levels whose entry in a length-4 mask is true."""
    values = mask.tolist() if isinstance(mask, torch.Tensor) else list(mask)
    return tuple(level for level, on in zip(LEVELS, values, strict=True) if on)


def subset_to_index(levels: Iterable[str]) -> int:
    """Encode a level subset as an integer in [0, 16): bit i set means LEVELS[i] is chosen."""
    chosen = set(levels)
    return sum(1 << i for i, level in enumerate(LEVELS) if level in chosen)


def index_to_subset(index: int) -> tuple[str, ...]:
    """Decode an integer in [0, 16) into a level subset (inverse of ``subset_to_index``)."""
    if not 0 <= index < NUM_SUBSETS:
        raise ValueError(f"subset index {index} outside [0, {NUM_SUBSETS})")
    return tuple(level for i, level in enumerate(LEVELS) if index >> i & 1)


def all_subsets() -> list[tuple[str, ...]]:
    """All 16 level subsets, in index order (the empty set first)."""
    return [index_to_subset(i) for i in range(NUM_SUBSETS)]


def masks_to_subsets(masks: torch.Tensor) -> torch.Tensor:
    """Level masks [..., 4] (bool or 0/1) -> subset indices [...] (long, on the masks' device);
    the batched ``subset_to_index``."""
    return (masks.long() * _LEVEL_BITS.to(masks.device)).sum(dim=-1)


def subsets_to_masks(indices: torch.Tensor) -> torch.Tensor:
    """Subset indices [...] in [0, 16) -> bool level masks [..., 4] (on the indices' device); the
    batched ``index_to_subset`` followed by ``levels_to_mask``."""
    return (indices.long().unsqueeze(-1) & _LEVEL_BITS.to(indices.device)) > 0


def format_levels(levels: Sequence[str]) -> str:
    """Human-readable name of a level set: ``none``, ``all`` or ``P2,P4``."""
    if not levels:
        return "none"
    if tuple(levels) == LEVELS:
        return "all"
    return ",".join(levels)
