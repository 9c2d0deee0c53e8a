"""Running per-level loss scales, so that a level's size does not decide its weight.

Raw KD losses at P2-P5 can differ by orders of magnitude (feature statistics and map sizes differ per
level). ``RunningLevelScale`` keeps an exponential moving average of each level's raw per-sample loss
over the entries where the level was active, and divides by it, so every level's normalised loss is
about 1 on average.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlpkd.levels import NUM_LEVELS

__all__ = ["RunningLevelScale"]


class RunningLevelScale(nn.Module):
    """Per-level running mean of the raw per-sample loss, used to normalise it.

    ``scale_l <- momentum * scale_l + (1 - momentum) * mean_{b active at l} loss[b, l]``; a level's
    scale is set to its batch mean the first time it is active. Buffers (``scale``,
    ``initialised``) are saved in the state dict.

    Args:
        momentum: weight of the old running value in the EMA, in [0, 1).
        num_levels: number of loss columns (4 for P2-P5).
        eps: lower bound on the scale when dividing.
    """

    scale: Tensor
    initialised: Tensor

    def __init__(
        self, momentum: float = 0.9, num_levels: int = NUM_LEVELS, eps: float = 1e-12
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.register_buffer("scale", torch.ones(num_levels))
        self.register_buffer("initialised", torch.zeros(num_levels, dtype=torch.bool))

    @torch.no_grad()
    def update(self, losses: Tensor, mask: Tensor) -> None:
        """Fold the batch means of the active entries of ``losses`` [B, L] into the running scale."""
        losses = losses.detach().to(self.scale.dtype)
        mask = mask.to(device=losses.device, dtype=torch.bool)
        counts = mask.sum(dim=0)
        sums = torch.where(mask, losses, torch.zeros_like(losses)).sum(dim=0)
        active = counts > 0
        batch_mean = sums / counts.clamp_min(1)
        blended = self.momentum * self.scale + (1.0 - self.momentum) * batch_mean
        updated = torch.where(self.initialised, blended, batch_mean)
        self.scale.copy_(torch.where(active, updated, self.scale))
        self.initialised |= active

    def normalise(self, losses: Tensor, mask: Tensor) -> Tensor:
        """``losses / scale`` per level (scale detached); masked entries are exactly zero.

        A level that has never been active has scale 1.
        """
        scale = self.scale.detach().clamp_min(self.eps).to(losses.dtype)
        normalised = losses / scale
        return torch.where(mask.to(torch.bool), normalised, torch.zeros_like(normalised))

    def forward(self, losses: Tensor, mask: Tensor) -> Tensor:
        """``update(losses, mask)`` then ``normalise(losses, mask)``."""
        self.update(losses, mask)
        return self.normalise(losses, mask)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, num_levels={self.scale.numel()}"
