"""The lazy teacher pyramid: compute only the FPN levels (and samples) that a level mask asks for.

DESIGN §2. Per sample: the backbone runs if any level is selected; the FPN's top-down path runs
from P5 down to the sample's lowest selected level; a level's 3x3 output conv (and, for the `kl`
loss, the head) runs only for the samples that selected that level. If no sample selects anything
the teacher does not run at all. Results equal the full FPN at the selected levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.models.detector import PyramidDetector

__all__ = ["LevelFeatures", "TeacherPyramid", "freeze_teacher", "lazy_teacher_pyramid"]


@dataclass
class LevelFeatures:
    """The teacher's outputs at one pyramid level, for the samples that selected it.

    Attributes:
        sample_index: [n] long, the batch rows these outputs belong to (distinct, any order).
        features: [n, C_t, H, W] teacher FPN features at the level.
        class_logits: [n, K, H, W] teacher head class logits at the level; only present when the
            KD loss needs them (``LevelKDLoss.needs_teacher_logits``).
    """

    sample_index: Tensor
    features: Tensor
    class_logits: Tensor | None = None


TeacherPyramid = dict[str, LevelFeatures]
"""Teacher outputs keyed by level name, holding only levels at least one sample selected."""


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no trainable parameters (DESIGN §2)."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def lazy_teacher_pyramid(
    teacher: PyramidDetector,
    images: torch.Tensor,
    mask: torch.Tensor,
    with_class_logits: bool = False,
) -> TeacherPyramid:
    """Teacher FPN features at the selected (sample, level) pairs only.

    Args:
        teacher: a frozen detector.
        images: [B, 3, H, W] in [0, 1].
        mask: [B, 4] bool, True where sample b wants level P2..P5 distilled.
        with_class_logits: also run the teacher's classification branch at those pairs.

    Returns:
        {level: LevelFeatures} for the levels at least one sample selected; ``sample_index``
        says which batch rows each entry belongs to.
    """
    mask = mask.to(device=images.device, dtype=torch.bool)
    active = mask.any(dim=1)
    if not bool(active.any()):
        return {}
    rows = active.nonzero(as_tuple=True)[0]
    sub_mask = mask[rows]
    lowest = torch.argmax(sub_mask.to(torch.uint8), dim=1)  # first selected level per row
    stages = teacher.body(teacher.normalise(images[rows]))
    fpn = teacher.fpn

    pyramid: dict[str, LevelFeatures] = {}
    last_inner: torch.Tensor | None = None
    last_rows: torch.Tensor | None = None  # positions (into `rows`) that last_inner covers
    for index in range(NUM_LEVELS - 1, -1, -1):
        needed = (lowest <= index).nonzero(as_tuple=True)[0]
        if needed.numel() == 0:
            continue
        lateral = fpn.get_result_from_inner_blocks(stages[index][needed], index)
        if last_inner is None:
            inner = lateral
        else:
            # rows needing this level are a subset of the rows that needed the level above
            position = torch.searchsorted(last_rows, needed)
            top_down = F.interpolate(last_inner[position], size=lateral.shape[-2:], mode="nearest")
            inner = lateral + top_down
        last_inner, last_rows = inner, needed
        selected = sub_mask[needed, index].nonzero(as_tuple=True)[0]
        if selected.numel() == 0:
            continue
        features = fpn.get_result_from_layer_blocks(inner[selected], index)
        logits = teacher.head.class_logits_at(features) if with_class_logits else None
        level = LEVELS[index]
        pyramid[level] = LevelFeatures(
            sample_index=rows[needed[selected]], features=features, class_logits=logits
        )
    return dict(sorted(pyramid.items()))
