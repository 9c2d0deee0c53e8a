"""A dense one-stage FCOS-style head (Tian et al., ICCV 2019), shared across pyramid levels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FCOSHead", "LevelHeadOutput"]


@dataclass
class LevelHeadOutput:
    """The head's raw outputs at one pyramid level.

    Attributes:
        class_logits: [B, K, H, W] per-class sigmoid logits.
        box_distances: [B, 4, H, W] non-negative (l, t, r, b) distances in units of the stride.
        centerness_logits: [B, 1, H, W].
    """

    class_logits: torch.Tensor
    box_distances: torch.Tensor
    centerness_logits: torch.Tensor


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), _group_norm(channels), nn.ReLU()]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """FCOS head: a classification tower and a box tower of 3x3 convs, then cls / box / centerness.

    As in torchvision's FCOSHead, centerness is predicted from the box tower and box distances are
    ReLU outputs normalised by the level's stride.
    """

    def __init__(
        self, in_channels: int, num_classes: int, num_convs: int = 4, prior_prob: float = 0.01
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_convs = num_convs
        self.cls_tower = _tower(in_channels, num_convs)
        self.box_tower = _tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.box_reg = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def class_logits_at(self, feature: torch.Tensor) -> torch.Tensor:
        """Only the class logits [B, K, H, W] at one level (what the `kl` KD loss needs)."""
        return self.cls_logits(self.cls_tower(feature))

    def forward(self, feature: torch.Tensor) -> LevelHeadOutput:
        """All head outputs at one level."""
        box_features = self.box_tower(feature)
        return LevelHeadOutput(
            class_logits=self.class_logits_at(feature),
            box_distances=torch.relu(self.box_reg(box_features)),
            centerness_logits=self.centerness(box_features),
        )
