"""The shuffled-mask control keeps the wrapped selector's masks and FLOPs, not its pairing."""

from __future__ import annotations

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.training.level_selection import ScaleRuleLevels
from rlpkd.training.shuffled_selection import ShuffledMaskLevels


def _batch(n: int = 12) -> DetectionBatch:
    generator = torch.Generator().manual_seed(0)
    size = torch.randint(4, 100, (n, 1), generator=generator).float()
    boxes = torch.cat([torch.zeros(n, 2), size, size], dim=1)[:, None, :]
    return DetectionBatch(
        torch.zeros(n, 3, 8, 8),
        boxes,
        torch.zeros(n, 1, dtype=torch.long),
        torch.arange(n),
        torch.ones(n),
    )


def test_rows_are_a_permutation_of_the_inner_masks() -> None:
    batch = _batch()
    inner = ScaleRuleLevels([10.0, 20.0, 40.0])
    original = inner.select(batch, 0.0)
    shuffled = ShuffledMaskLevels(inner, seed=0)
    mask = shuffled.select(batch, 0.0)
    assert sorted(map(tuple, mask.tolist())) == sorted(map(tuple, original.tolist()))
    assert not torch.equal(mask, original)  # the pairing with samples is broken
    assert shuffled.name == "scale-rule:shuffled"
    assert shuffled.fingerprint.startswith(inner.fingerprint)


def test_state_restores_the_same_permutations() -> None:
    batch = _batch()
    a = ShuffledMaskLevels(ScaleRuleLevels([10.0, 20.0, 40.0]), seed=3)
    a.select(batch, 0.0)
    state = a.state_dict()
    expected = a.select(batch, 0.0)
    b = ShuffledMaskLevels(ScaleRuleLevels([10.0, 20.0, 40.0]), seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.select(batch, 0.0), expected)
