"""Analytic per-layer FLOPs of the detectors, from module attributes and conv arithmetic.

Conventions follow ``torch.utils.flop_counter.FlopCounterMode`` so the two can be compared
(DESIGN §4): 2 FLOPs per multiply-add; only convolutions and matrix products count (not bias,
norms, activations, additions, interpolation or pooling). Nothing here runs a model: spatial sizes
are propagated through the architecture with the usual output-size formula.

Backward of a convolution (groups = 1) costs its forward once for the input gradient and once for
the weight gradient; a conv whose input needs no gradient (the first conv, fed the image) costs
its forward once.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FeaturePyramidNetwork

from rlpkd.models.backbone import ResNetBody
from rlpkd.models.head import FCOSHead

__all__ = [
    "HW",
    "conv_output_hw",
    "pool_output_hw",
    "conv2d_flops",
    "conv_train_flops",
    "conv_stack_flops",
    "resnet_block_flops",
    "resnet_body_flops",
    "resnet_stem_conv_flops",
    "fpn_lateral_flops",
    "fpn_output_flops",
    "head_flops",
    "head_class_branch_flops",
]

HW = tuple[int, int]
"""A spatial size (height, width)."""


def _pair(value: int | Sequence[int]) -> HW:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_hw(conv: nn.Conv2d, in_hw: HW) -> HW:
    """Output spatial size of ``conv`` for an input of size ``in_hw``."""
    if isinstance(conv.padding, str):
        if conv.padding == "same":
            return in_hw
        padding = (0, 0)
    else:
        padding = _pair(conv.padding)
    kernel, stride, dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    return (
        _output_size(in_hw[0], kernel[0], stride[0], padding[0], dilation[0]),
        _output_size(in_hw[1], kernel[1], stride[1], padding[1], dilation[1]),
    )


def pool_output_hw(pool: nn.MaxPool2d, in_hw: HW) -> HW:
    """Output spatial size of a max-pool (pooling itself costs no FLOPs)."""
    kernel, padding, dilation = _pair(pool.kernel_size), _pair(pool.padding), _pair(pool.dilation)
    stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    out = []
    for axis in range(2):
        effective = dilation[axis] * (kernel[axis] - 1) + 1
        span = in_hw[axis] + 2 * padding[axis] - effective
        if pool.ceil_mode:
            size = -(-span // stride[axis]) + 1
            # the last window must start inside the input or its left padding
            if (size - 1) * stride[axis] >= in_hw[axis] + padding[axis]:
                size -= 1
        else:
            size = span // stride[axis] + 1
        out.append(size)
    return out[0], out[1]


def conv2d_flops(conv: nn.Conv2d, in_hw: HW) -> tuple[float, HW]:
    """Forward FLOPs of one image through ``conv`` (bias excluded), and its output size."""
    out_hw = conv_output_hw(conv, in_hw)
    kernel = _pair(conv.kernel_size)
    macs = (
        conv.out_channels
        * (conv.in_channels // conv.groups)
        * kernel[0]
        * kernel[1]
        * out_hw[0]
        * out_hw[1]
    )
    return 2.0 * macs, out_hw


def conv_train_flops(forward_flops: float, input_needs_grad: bool = True) -> float:
    """Forward + backward FLOPs of a conv (groups = 1) whose forward costs ``forward_flops``.

    Backward computes the weight gradient (one forward's worth) and, unless the input needs no
    gradient, the input gradient (another).
    """
    return forward_flops * (3.0 if input_needs_grad else 2.0)


def conv_stack_flops(module: nn.Module, in_hw: HW) -> tuple[float, HW]:
    """Forward FLOPs of a plain stack (e.g. ``nn.Sequential``) whose convs run in module order."""
    total, hw = 0.0, in_hw
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            flops, hw = conv2d_flops(layer, hw)
            total += flops
        elif isinstance(layer, nn.MaxPool2d):
            hw = pool_output_hw(layer, hw)
    return total, hw


def resnet_block_flops(block: nn.Module, in_hw: HW) -> tuple[float, HW]:
    """Forward FLOPs of a torchvision ``BasicBlock`` or ``Bottleneck``, and its output size."""
    if isinstance(block, BasicBlock):
        path = (block.conv1, block.conv2)
    elif isinstance(block, Bottleneck):
        path = (block.conv1, block.conv2, block.conv3)
    else:
        raise TypeError(f"unsupported ResNet block {type(block).__name__}")
    total, hw = 0.0, in_hw
    for conv in path:
        flops, hw = conv2d_flops(conv, hw)
        total += flops
    if block.downsample is not None:
        # the shortcut projects the block's input, not the main path's output
        flops, _ = conv_stack_flops(block.downsample, in_hw)
        total += flops
    return total, hw


def resnet_stem_conv_flops(body: ResNetBody, image_hw: HW) -> float:
    """Forward FLOPs of the body's first conv (the one whose input, the image, needs no grad)."""
    flops, _ = conv2d_flops(body.conv1, image_hw)
    return flops


def resnet_body_flops(body: ResNetBody, image_hw: HW) -> tuple[float, list[HW]]:
    """Forward FLOPs of a ResNet body on one image, and the spatial sizes of C2..C5."""
    total, hw = conv2d_flops(body.conv1, image_hw)
    hw = pool_output_hw(body.maxpool, hw)
    stage_hw: list[HW] = []
    for layer in (body.layer1, body.layer2, body.layer3, body.layer4):
        for block in layer:
            flops, hw = resnet_block_flops(block, hw)
            total += flops
        stage_hw.append(hw)
    return total, stage_hw


def fpn_lateral_flops(fpn: FeaturePyramidNetwork, stage_hw: Sequence[HW]) -> list[float]:
    """Forward FLOPs of each FPN lateral (inner 1x1) conv, one per level P2..P5."""
    return [
        conv_stack_flops(block, hw)[0] for block, hw in zip(fpn.inner_blocks, stage_hw, strict=True)
    ]


def fpn_output_flops(fpn: FeaturePyramidNetwork, stage_hw: Sequence[HW]) -> list[float]:
    """Forward FLOPs of each FPN output (3x3) conv, one per level P2..P5.

    Laterals are 1x1 stride-1 convs, so a level's inner feature has its stage's size.
    """
    return [
        conv_stack_flops(block, hw)[0] for block, hw in zip(fpn.layer_blocks, stage_hw, strict=True)
    ]


def head_class_branch_flops(head: FCOSHead, hw: HW) -> float:
    """Forward FLOPs of the head's classification branch (cls tower + cls logits) at one level."""
    tower, tower_hw = conv_stack_flops(head.cls_tower, hw)
    logits, _ = conv2d_flops(head.cls_logits, tower_hw)
    return tower + logits


def head_flops(head: FCOSHead, hw: HW) -> float:
    """Forward FLOPs of the whole head (both towers and all three predictors) at one level."""
    box_tower, box_hw = conv_stack_flops(head.box_tower, hw)
    box_reg, _ = conv2d_flops(head.box_reg, box_hw)
    centerness, _ = conv2d_flops(head.centerness, box_hw)
    return head_class_branch_flops(head, hw) + box_tower + box_reg + centerness
