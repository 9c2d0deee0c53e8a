"""ResNet bodies (torchvision) that return the C2-C5 feature maps an FPN consumes."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from rlpkd.checkpoint_io import load_checkpoint
from rlpkd.errors import CheckpointError, ConfigError

__all__ = ["RESNET_LAYERS", "ResNetBody", "build_resnet", "resnet_stage_channels"]

RESNET_LAYERS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}

_IMAGENET_WEIGHTS = {
    18: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    34: torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    50: torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    101: torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class _WidthScaledResNet(ResNet):
    """torchvision's ResNet with every stage's width multiplied by ``width`` (CPU-sized presets)."""

    def __init__(self, block: type[nn.Module], layers: list[int], width: float) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = _scaled(64, width)
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, _scaled(64, width), layers[0])
        self.layer2 = self._make_layer(block, _scaled(128, width), layers[1], stride=2)
        self.layer3 = self._make_layer(block, _scaled(256, width), layers[2], stride=2)
        self.layer4 = self._make_layer(block, _scaled(512, width), layers[3], stride=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def build_resnet(depth: int, width: float = 1.0, pretrained: bool = False) -> ResNet:
    """A torchvision ResNet of ``depth`` (18/34/50/101), optionally width-scaled.

    ImageNet weights are loaded only from the local torch hub cache; nothing is downloaded.

    Raises:
        ConfigError: an unknown depth, or pretrained weights asked for but not in the cache.
        CheckpointError: the cached weights file is truncated, foreign or for another model.
    """
    if depth not in RESNET_LAYERS:
        raise ConfigError(f"unknown ResNet depth {depth}; valid: {sorted(RESNET_LAYERS)}")
    block, layers = RESNET_LAYERS[depth]
    if width == 1.0:
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    else:
        if pretrained:
            raise ConfigError("pretrained ImageNet weights exist only for width 1.0")
        model = _WidthScaledResNet(block, layers, width)
    if pretrained:
        weights = _IMAGENET_WEIGHTS[depth]
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not path.is_file():
            raise ConfigError(
                f"pretrained weights for ResNet-{depth} not found at {path}; "
                "copy them there or set pretrained: false (nothing is downloaded)"
            )
        state = load_checkpoint(path, f"pretrained ResNet-{depth} weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first_line = (str(error).strip().splitlines() or ["mismatch"])[0]
            raise CheckpointError(
                f"pretrained ResNet-{depth} weights {path} do not fit the model ({first_line}); "
                "replace the file with torchvision's"
            ) from None
    return model


def resnet_stage_channels(model: ResNet) -> list[int]:
    """Output channels of layer1..layer4 (C2..C5)."""
    channels = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        last = layer[-1]
        channels.append(last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features)
    return channels


class ResNetBody(nn.Module):
    """The convolutional body of a ResNet: image -> [C2, C3, C4, C5] (strides 4, 8, 16, 32)."""

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        self.out_channels = resnet_stage_channels(resnet)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """C2..C5 for a normalised image batch."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]
