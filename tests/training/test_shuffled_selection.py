"""The shuffled-mask control keeps the wrapped selector's masks and FLOPs, not its pairing."""

from __future__ import annotations

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.training.level_selection import ScaleRuleLevels, StepObservingSelector
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
    assert list(state) == ["generator", "inner"]  # the keys resume files were written with
    expected = a.select(batch, 0.0)
    b = ShuffledMaskLevels(ScaleRuleLevels([10.0, 20.0, 40.0]), seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.select(batch, 0.0), expected)


class _Observing:
    """A selector that records the steps it is shown."""

    name = "observing"

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        return torch.ones(len(batch), 4, dtype=torch.bool)

    def observe_step(self, batch: DetectionBatch, mask: torch.Tensor, terms: object) -> None:
        self.steps.append(mask)


def test_a_finished_step_reaches_the_wrapped_selector_with_the_mask_used() -> None:
    inner = _Observing()
    shuffled = ShuffledMaskLevels(inner, seed=0)
    assert isinstance(shuffled, StepObservingSelector)
    mask = shuffled.select(_batch(), 0.0)
    shuffled.observe_step(_batch(), mask, None)
    assert len(inner.steps) == 1 and inner.steps[0] is mask
    # a wrapped selector that does not observe steps is simply not told
    ShuffledMaskLevels(ScaleRuleLevels([10.0, 20.0, 40.0]), seed=0).observe_step(
        _batch(), mask, None
    )
