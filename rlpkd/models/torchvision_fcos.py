"""A teacher started from torchvision's COCO-trained FCOS (``teacher.init``).

torchvision's ``fcos_resnet50_fpn`` (COCO_V1 weights, 39.2 box AP) is a ResNet-50, an FPN on
C3-C5 (with P6/P7 from P5) and a shared FCOS head. Its state dict fits a P2-P5
``PyramidDetector`` of the same sizes: the body key for key, its FPN laterals and outputs of
C3-C5 onto ours (which have one more, C2's, first), the head's towers and its box and centerness
convs, and the class-logit rows of the dataset's classes when they are COCO categories. What has
no counterpart (the P2 lateral and output, and the class logits of other classes) stays as built;
``freeze_mapped`` freezes the rest, so the teacher's fine-tune trains only that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FCOS_ResNet50_FPN_Weights

from rlpkd.checkpoint_io import load_checkpoint
from rlpkd.config import ModelConfig
from rlpkd.config_validation import check_init_architecture
from rlpkd.errors import CheckpointError
from rlpkd.models.detector import PyramidDetector

__all__ = [
    "TORCHVISION_FCOS_FILE",
    "COCO_CATEGORY_NAMES",
    "FcosInit",
    "torchvision_fcos_key_map",
    "coco_class_rows",
    "read_torchvision_fcos",
    "check_torchvision_fcos_file",
    "load_torchvision_fcos",
    "freeze_mapped",
]

TORCHVISION_FCOS_FILE = Path(FCOS_ResNet50_FPN_Weights.COCO_V1.url).name
"""The file name of the COCO_V1 weights in the torch hub cache (``<hub>/checkpoints/``)."""

COCO_CATEGORY_NAMES: tuple[str, ...] = tuple(FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
"""The class of each of torchvision's 91 class-logit rows: row = COCO category id ('N/A' for
unused ids, row 0 background)."""

_HEAD_NAMES = {
    "head.cls_tower.": "head.classification_head.conv.",
    "head.box_tower.": "head.regression_head.conv.",
    "head.box_reg.": "head.regression_head.bbox_reg.",
    "head.centerness.": "head.regression_head.bbox_ctrness.",
}
_FPN_BLOCK = re.compile(r"fpn\.(inner|layer)_blocks\.(\d+)\.(.+)")
_CLASS_LOGITS = "head.cls_logits."
_TORCHVISION_CLASS_LOGITS = "head.classification_head.cls_logits."
_BATCH_COUNTER = "num_batches_tracked"  # absent where torchvision used FrozenBatchNorm2d


@dataclass(frozen=True)
class FcosInit:
    """What ``load_torchvision_fcos`` copied into a detector."""

    mapped: tuple[str, ...]
    """The detector's state-dict keys copied from the file (``freeze_mapped`` freezes them)."""
    unmapped: tuple[str, ...]
    """Its keys left as built, which the teacher's fine-tune trains: the P2 lateral and output,
    and the class logits unless every class is a COCO category (BatchNorm batch counters that
    the file lacks are not listed: an eval-mode BatchNorm never reads them)."""


def _torchvision_key(key: str) -> str | None:
    """torchvision's ``fcos_resnet50_fpn`` key of our state-dict ``key``, or None."""
    if key.startswith("body."):
        return f"backbone.{key}"
    block = _FPN_BLOCK.fullmatch(key)
    if block is not None:
        kind, index, rest = block[1], int(block[2]) - 1, block[3]  # their C3 block is our C2's + 1
        return None if index < 0 else f"backbone.fpn.{kind}_blocks.{index}.{rest}"
    for ours, theirs in _HEAD_NAMES.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def torchvision_fcos_key_map(detector: PyramidDetector) -> dict[str, str]:
    """{our state-dict key: torchvision ``fcos_resnet50_fpn`` key} of every tensor copied as it
    is: the body, the C3-C5 FPN blocks and the head less its class logits (whose rows are picked
    per class, ``coco_class_rows``)."""
    keys = ((key, _torchvision_key(key)) for key in detector.state_dict())
    return {ours: theirs for ours, theirs in keys if theirs is not None}


def coco_class_rows(categories: Sequence[tuple[int, str]]) -> list[int] | None:
    """torchvision's class-logit row of each class ((COCO category id, name) per contiguous class
    index, as ``CocoDetectionDataset`` numbers them), or None unless every class is the COCO
    category of that id and name."""
    rows = [category_id for category_id, _ in categories]
    matched = all(
        0 < category_id < len(COCO_CATEGORY_NAMES) and COCO_CATEGORY_NAMES[category_id] == name
        for category_id, name in categories
    )
    return rows if categories and matched else None


def read_torchvision_fcos(
    path: str | Path, detector: PyramidDetector, key: str = "teacher.init"
) -> dict[str, torch.Tensor]:
    """The state dict at ``path``, checked to be torchvision's ``fcos_resnet50_fpn``'s for
    ``detector``'s sizes (its 91-row class logits included).

    Args:
        path: the file (``~`` expanded).
        detector: a detector of torchvision's architecture (``check_init_architecture``).
        key: the config key that named the file, for errors.

    Raises:
        ConfigError: ``detector`` is not of torchvision's architecture.
        CheckpointError: the file is missing, unreadable, not a state dict, or lacks one of
            fcos_resnet50_fpn's tensors or holds it with another shape.
    """
    section = key.rsplit(".", 1)[0]
    check_init_architecture(detector.spec, section, key)
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"{key} {path} not found; copy torchvision's {TORCHVISION_FCOS_FILE} there or clear "
            f"{key} (nothing is downloaded)"
        )
    state = load_checkpoint(path, f"{key} (torchvision fcos_resnet50_fpn weights)")
    ours = detector.state_dict()
    expected = {
        theirs: ours[mine].shape
        for mine, theirs in torchvision_fcos_key_map(detector).items()
        if not mine.endswith(_BATCH_COUNTER)
    }
    channels = detector.spec.fpn_channels
    expected[f"{_TORCHVISION_CLASS_LOGITS}weight"] = torch.Size([91, channels, 3, 3])
    expected[f"{_TORCHVISION_CLASS_LOGITS}bias"] = torch.Size([91])
    missing = [name for name in expected if not isinstance(state.get(name), torch.Tensor)]
    if missing:
        raise CheckpointError(
            f"{key} {path} is not a state dict of torchvision's fcos_resnet50_fpn: it lacks "
            f"{len(missing)} of its {len(expected)} tensors (e.g. '{missing[0]}')"
        )
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise CheckpointError(
                f"{key} {path} is not a state dict of torchvision's fcos_resnet50_fpn: "
                f"'{name}' has shape {list(state[name].shape)}, not {list(shape)}"
            )
    return state


def check_torchvision_fcos_file(spec: ModelConfig, path: str | Path, key: str) -> None:
    """Fail now, before a run writes anything, unless ``path`` is a state dict of torchvision's
    ``fcos_resnet50_fpn`` that a detector of ``spec`` can start from (shapes only: the detector
    is built on the meta device).

    Raises:
        ConfigError, CheckpointError: as ``read_torchvision_fcos``.
    """
    check_init_architecture(spec, key.rsplit(".", 1)[0], key)
    with torch.device("meta"):
        detector = PyramidDetector(spec, 1, (1.0, 2.0, 3.0))
    read_torchvision_fcos(path, detector, key)


def load_torchvision_fcos(
    detector: PyramidDetector,
    path: str | Path,
    categories: Sequence[tuple[int, str]] = (),
    key: str = "teacher.init",
) -> FcosInit:
    """Copy torchvision's ``fcos_resnet50_fpn`` weights at ``path`` into ``detector`` in place.

    Args:
        detector: a P2-P5 detector of torchvision's architecture (ResNet-50, width 1.0, 256 FPN
            channels, 4 head convs).
        path: a state dict of ``fcos_resnet50_fpn`` (the torch hub cache's
            ``TORCHVISION_FCOS_FILE``).
        categories: (COCO category id, name) of each of the detector's classes; the class
            logits are copied (row by category id) only if every one is that COCO category.
        key: the config key that named the file, for errors.

    Returns:
        Which of the detector's tensors were copied and which were left as built.

    Raises:
        ConfigError, CheckpointError: as ``read_torchvision_fcos``.
    """
    if categories and len(categories) != detector.num_classes:
        raise ValueError(f"{len(categories)} categories for {detector.num_classes} classes")
    state = read_torchvision_fcos(path, detector, key)
    merged = detector.state_dict()
    sources = {
        mine: state[theirs]
        for mine, theirs in torchvision_fcos_key_map(detector).items()
        if theirs in state  # a FrozenBatchNorm2d file has no batch counters
    }
    rows = coco_class_rows(categories)
    if rows is not None:
        for name in ("weight", "bias"):
            sources[_CLASS_LOGITS + name] = state[_TORCHVISION_CLASS_LOGITS + name][rows]
    for mine, tensor in sources.items():
        merged[mine] = tensor.to(merged[mine].dtype)
    detector.load_state_dict(merged)
    unmapped = (k for k in merged if k not in sources and not k.endswith(_BATCH_COUNTER))
    return FcosInit(mapped=tuple(k for k in merged if k in sources), unmapped=tuple(unmapped))


def freeze_mapped(detector: nn.Module, init: FcosInit) -> list[str]:
    """Freeze what ``init`` copied: those parameters stop taking gradients (and ``train_detector``
    keeps a BatchNorm whose parameters are all frozen in eval mode, so its copied statistics do
    not drift either). Returns the names of the parameters left to train."""
    mapped = set(init.mapped)
    trainable = []
    for name, parameter in detector.named_parameters():
        parameter.requires_grad_(name not in mapped)
        if name not in mapped:
            trainable.append(name)
    return trainable
