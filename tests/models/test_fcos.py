"""FCOS target assignment and losses behave as the FCOS rules say."""

from __future__ import annotations

import torch

from rlpkd.models.fcos_loss import assign_fcos_targets, box_pyramid_levels, level_points

THRESHOLDS = (4.0, 8.0, 16.0)
SIZES = [(16, 16), (8, 8), (4, 4), (2, 2)]  # a 64-px image


def _assign(boxes, labels):
    points, point_level = level_points(SIZES, torch.device("cpu"))
    return assign_fcos_targets(points, point_level, boxes, labels, THRESHOLDS), point_level


def test_small_box_goes_to_p2_and_large_box_to_p5():
    boxes = torch.tensor([[[10.0, 10.0, 16.0, 16.0], [2.0, 2.0, 62.0, 62.0]]])
    targets, point_level = _assign(boxes, torch.tensor([[0, 1]]))
    small_levels = point_level[(targets.labels[0] == 0)]
    large_levels = point_level[(targets.labels[0] == 1)]
    assert small_levels.numel() > 0 and set(small_levels.tolist()) == {0}
    assert large_levels.numel() > 0 and set(large_levels.tolist()) == {3}
    assert box_pyramid_levels(boxes[0], THRESHOLDS).tolist() == [0, 3]


def test_padding_boxes_are_never_assigned():
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 0.0, 0.0]]])
    targets, _ = _assign(boxes, torch.tensor([[2, -1]]))
    assert set(targets.labels[0].unique().tolist()) == {-1, 2}


def test_batched_assignment_matches_per_image(tiny_student):
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0]], [[20.0, 30.0, 28.0, 38.0]]])
    labels = torch.tensor([[1], [0]])
    batched, _ = _assign(boxes, labels)
    for i in range(2):
        single, _ = _assign(boxes[i : i + 1], labels[i : i + 1])
        assert torch.equal(single.labels[0], batched.labels[i])


def test_detection_loss_decreases_when_fitting_one_batch(tiny_student):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0]], [[20.0, 30.0, 28.0, 38.0]]])
    labels = torch.tensor([[1], [0]])
    optimizer = torch.optim.AdamW(tiny_student.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = tiny_student.detection_loss(tiny_student(images), boxes, labels)
        optimizer.zero_grad()
        loss["total"].backward()
        optimizer.step()
        losses.append(loss["total"].item())
    assert losses[-1] < 0.5 * losses[0]
    torch.testing.assert_close(loss["per_sample"].sum(), loss["total"])
