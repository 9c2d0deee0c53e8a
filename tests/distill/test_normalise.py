"""RunningLevelScale: levels of very different size come out O(1) and comparable."""

from __future__ import annotations

import pytest
import torch

from rlpkd.distill.normalise import RunningLevelScale


def test_levels_differing_by_1000x_have_equal_normalised_means() -> None:
    torch.manual_seed(0)
    scaler = RunningLevelScale(momentum=0.9)
    mask = torch.ones(16, 4, dtype=torch.bool)
    mask[:, 2:] = False
    level_means = []
    for _ in range(50):
        raw = torch.rand(16, 4) + 0.5
        raw[:, 0] *= 1000.0
        normalised = scaler(raw, mask)
        level_means.append(normalised[:, :2].mean(dim=0))
    recent = torch.stack(level_means[-20:]).mean(dim=0)
    assert recent[0].item() == pytest.approx(recent[1].item(), rel=0.05)
    assert recent[0].item() == pytest.approx(1.0, rel=0.1)


def test_scale_starts_at_first_active_batch_mean_and_ignores_masked_entries() -> None:
    scaler = RunningLevelScale(momentum=0.5)
    losses = torch.tensor([[2.0, 1e9, 5.0, 0.0], [4.0, 7.0, 1e9, 0.0]])
    mask = torch.tensor([[True, False, True, False], [True, True, False, False]])
    scaler.update(losses, mask)
    torch.testing.assert_close(scaler.scale, torch.tensor([3.0, 7.0, 5.0, 1.0]))
    assert scaler.initialised.tolist() == [True, True, True, False]

    scaler.update(torch.tensor([[5.0, 1.0, 1.0, 8.0]]), torch.tensor([[True, False, False, True]]))
    # EMA where active; P4 initialised from its first active batch; P3, P4 columns unchanged.
    torch.testing.assert_close(scaler.scale, torch.tensor([4.0, 7.0, 5.0, 8.0]))


def test_normalise_zeroes_masked_entries_and_does_not_differentiate_the_scale() -> None:
    scaler = RunningLevelScale()
    scaler.update(torch.tensor([[10.0, 2.0, 1.0, 1.0]]), torch.ones(1, 4, dtype=torch.bool))
    losses = torch.tensor([[20.0, float("nan"), 3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True, True]])
    out = scaler.normalise(losses, mask)
    assert out[0, 1].item() == 0.0
    torch.testing.assert_close(out[0, [0, 2, 3]], torch.tensor([2.0, 3.0, 4.0]))
    out.sum().backward()
    torch.testing.assert_close(losses.grad, torch.tensor([[0.1, 0.0, 1.0, 1.0]]))


def test_state_dict_round_trip() -> None:
    scaler = RunningLevelScale(momentum=0.8)
    scaler.update(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[True, True, False, True]]))
    restored = RunningLevelScale(momentum=0.8)
    restored.load_state_dict(scaler.state_dict())
    assert torch.equal(restored.scale, scaler.scale)
    assert torch.equal(restored.initialised, scaler.initialised)
    assert set(scaler.state_dict()) == {"scale", "initialised"}
