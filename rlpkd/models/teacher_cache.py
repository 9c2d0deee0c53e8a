"""A memo of the frozen teacher's pyramid per distinct input image (``runtime.teacher_cache_gb``).

The teacher is frozen and in eval mode, so its FPN outputs are a function of the input image
alone. A student trains for several epochs on the same images, and with horizontal flips each
image comes in at most two versions, so most teacher forwards of a KD run recompute something
already computed. ``TeacherFeatureCache`` keys each image by a digest of its pixels (so any
augmentation that changes the pixels is simply a new entry), runs the teacher on the images it
has not seen (all four levels, once, one image at a time so that an entry is a function of the
image alone, whatever batch it came in and whichever run filled the cache), stores their outputs
up to a memory budget and answers every later request from memory. Its answer has the form of
``lazy_teacher_pyramid``'s and equals it at every selected (sample, level) pair up to float
rounding (the lazy teacher's, in a batch, rounds differently: a run with the cache is as
deterministic as one without, but not bit-identical to it).

It is a wall-time device of small CPU experiments (the embedded default: about 0.52 MB per image
version, 0.84 GB for all 1,600): the counted ``kd_gflops`` stay the FLOPs model's, i.e. what the
lazy teacher computes (DESIGN §4), cache or not. ``scripts/benchmark.py`` measures the speed-up.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.lazy_pyramid import LevelFeatures, TeacherPyramid, lazy_teacher_pyramid

__all__ = ["TeacherFeatureCache", "image_digest"]

_GIGABYTE = 1024**3
_Entry = tuple[tuple[Tensor, Tensor | None], ...]
"""One image's teacher outputs: (features [C, H, W], class logits [K, H, W] or None) per level."""


def image_digest(image: Tensor) -> bytes:
    """A 16-byte digest of one image's pixels (dtype, shape and values) on the CPU."""
    pixels = image.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{pixels.dtype}{tuple(pixels.shape)}".encode())
    digest.update(pixels.numpy().tobytes())
    return digest.digest()


class TeacherFeatureCache:
    """The frozen ``teacher``'s pyramid per distinct image, kept up to ``max_gb`` (see module doc).

    Args:
        teacher: the frozen teacher (``freeze_teacher``); it must not change while the cache
            lives.
        max_gb: memory for stored outputs; once full, new images are computed but not stored.
    """

    def __init__(self, teacher: PyramidDetector, max_gb: float) -> None:
        if max_gb <= 0:
            raise ValueError(f"TeacherFeatureCache needs a positive max_gb, got {max_gb}")
        self.teacher = teacher
        self.max_bytes = int(max_gb * _GIGABYTE)
        self.stored_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[bytes, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def pyramid(
        self, images: Tensor, mask: Tensor, with_class_logits: bool = False
    ) -> TeacherPyramid:
        """``lazy_teacher_pyramid(teacher, images, mask, with_class_logits)`` from the memo.

        Args:
            images: [B, 3, H, W] in [0, 1].
            mask: [B, 4] bool, True where sample b wants level P2..P5 distilled.
            with_class_logits: also return the teacher's class logits at those pairs.
        """
        mask = mask.to(device=images.device, dtype=torch.bool)
        rows = mask.any(dim=1).nonzero(as_tuple=True)[0].tolist()
        if not rows:
            return {}
        keys = {row: image_digest(images[row]) for row in rows}
        entries = {row: self._entries.get(keys[row]) for row in rows}
        if with_class_logits:  # an entry stored without logits cannot answer
            entries = {
                r: e if e is None or e[0][1] is not None else None for r, e in entries.items()
            }
        missing = [row for row in rows if entries[row] is None]
        self.hits += len(rows) - len(missing)
        self.misses += len(missing)
        for row in missing:
            entries[row] = self._compute(images[row : row + 1], with_class_logits)
            self._store(keys[row], entries[row])
        pyramid: TeacherPyramid = {}
        for index, level in enumerate(LEVELS):
            selected = mask[:, index].nonzero(as_tuple=True)[0]
            if selected.numel() == 0:
                continue
            chosen = [entries[row][index] for row in selected.tolist()]
            pyramid[level] = LevelFeatures(
                sample_index=selected,
                features=torch.stack([features for features, _ in chosen]),
                class_logits=(
                    torch.stack([logits for _, logits in chosen]) if with_class_logits else None
                ),
            )
        return pyramid

    def _compute(self, image: Tensor, with_class_logits: bool) -> _Entry:
        """(features, logits) at every level for one image ([1, 3, H, W]), by the lazy teacher
        at all levels. One image at a time: a convolution's rounding depends on the batch it
        runs in, so an entry computed in a batch would depend on which images shared it, i.e. on
        which student filled the cache first, and a student's result on what its process ran
        before."""
        everything = torch.ones(1, NUM_LEVELS, dtype=torch.bool, device=image.device)
        full = lazy_teacher_pyramid(self.teacher, image, everything, with_class_logits)
        return tuple(
            (
                full[level].features[0],
                None if full[level].class_logits is None else full[level].class_logits[0],
            )
            for level in LEVELS
        )

    def _store(self, key: bytes, entry: _Entry) -> None:
        previous = self._entries.pop(key, None)
        if previous is not None:  # stored without the class logits: replaced
            self.stored_bytes -= _entry_bytes(previous)
        size = _entry_bytes(entry)
        if self.stored_bytes + size <= self.max_bytes:
            self._entries[key] = entry
            self.stored_bytes += size


def _entry_bytes(entry: _Entry) -> int:
    return sum(t.numel() * t.element_size() for pair in entry for t in pair if t is not None)
