"""The lazy teacher pyramid equals the full FPN where it computes, and computes nothing else."""

from __future__ import annotations

import torch

from rlpkd.levels import LEVELS
from rlpkd.models.lazy_pyramid import freeze_teacher, lazy_teacher_pyramid


def test_lazy_pyramid_equals_full_fpn_at_selected_levels(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    images = torch.rand(4, 3, 64, 64)
    mask = torch.tensor(
        [
            [True, False, False, False],
            [False, False, False, True],
            [False, True, False, True],
            [False, False, False, False],
        ]
    )
    with torch.no_grad():
        full = teacher.pyramid(images)
        full_logits = {lv: teacher.head.class_logits_at(f) for lv, f in full.items()}
    lazy = lazy_teacher_pyramid(teacher, images, mask, with_class_logits=True)
    assert set(lazy) == {"P2", "P3", "P5"}
    for level, entry in lazy.items():
        expected_rows = mask[:, LEVELS.index(level)].nonzero().flatten()
        assert sorted(entry.sample_index.tolist()) == expected_rows.tolist()
        torch.testing.assert_close(
            entry.features, full[level][entry.sample_index], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(
            entry.class_logits, full_logits[level][entry.sample_index], rtol=1e-4, atol=1e-4
        )


def test_empty_mask_does_not_run_the_teacher(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    calls = []
    teacher.body.register_forward_hook(lambda *args: calls.append(1))
    out = lazy_teacher_pyramid(teacher, torch.rand(3, 3, 64, 64), torch.zeros(3, 4, dtype=bool))
    assert out == {} and calls == []
    lazy_teacher_pyramid(teacher, torch.rand(3, 3, 64, 64), torch.eye(4, dtype=bool)[:3])
    assert calls == [1]


def test_top_down_stops_at_lowest_selected_level(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    used = []
    for index, block in enumerate(teacher.fpn.inner_blocks):
        block.register_forward_hook(lambda *args, i=index: used.append(i))
    for index, block in enumerate(teacher.fpn.layer_blocks):
        block.register_forward_hook(lambda *args, i=index: used.append(10 + i))
    mask = torch.tensor([[False, False, True, False]])  # P4 only
    lazy_teacher_pyramid(teacher, torch.rand(1, 3, 64, 64), mask)
    assert sorted(used) == [2, 3, 12]  # laterals of P4, P5; output conv of P4 only


def test_frozen_teacher_has_no_trainable_parameters(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
