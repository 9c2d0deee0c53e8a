"""The teacher cache answers as the lazy teacher does, runs the teacher once per distinct image,
keeps to its memory budget, and a KD step with it updates the student exactly as without it."""

from __future__ import annotations

import copy

import pytest
import torch

from rlpkd.config import DistillConfig
from rlpkd.distill.objective import DistillationObjective
from rlpkd.models.lazy_pyramid import freeze_teacher, lazy_teacher_pyramid
from rlpkd.models.teacher_cache import TeacherFeatureCache, image_digest
from rlpkd.training.kd_step import kd_training_step
from tests.conftest import two_box_batch

MASK = torch.tensor(
    [
        [True, False, False, False],
        [False, False, False, True],
        [False, True, True, True],
        [False, False, False, False],
    ]
)


def _count_teacher_images(teacher) -> list[int]:
    seen: list[int] = []
    teacher.body.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    return seen


def _assert_same_pyramid(got, expected) -> None:
    # as lazy_teacher_pyramid's own test: a sub-batch's convolutions round differently
    assert set(got) == set(expected)
    for level, entry in expected.items():
        order = torch.argsort(got[level].sample_index)
        expected_order = torch.argsort(entry.sample_index)
        assert torch.equal(got[level].sample_index[order], entry.sample_index[expected_order])
        torch.testing.assert_close(
            got[level].features[order], entry.features[expected_order], rtol=1e-4, atol=1e-4
        )
        if entry.class_logits is not None:
            torch.testing.assert_close(
                got[level].class_logits[order],
                entry.class_logits[expected_order],
                rtol=1e-4,
                atol=1e-4,
            )


def test_cache_equals_lazy_teacher_and_runs_the_teacher_once_per_image(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    seen = _count_teacher_images(teacher)
    cache = TeacherFeatureCache(teacher, 1.0)
    images = torch.rand(4, 3, 64, 64)
    first = cache.pyramid(images, MASK, with_class_logits=True)
    assert seen == [1, 1, 1]  # the three rows that selected something, one at a time
    other_mask = torch.tensor([[False, True, False, True]] * 3 + [[True] * 4])
    again = cache.pyramid(images, other_mask, with_class_logits=True)
    assert seen == [1, 1, 1, 1]  # only row 3 is new
    assert (cache.hits, cache.misses, len(cache)) == (3, 4, 4)
    seen.clear()
    expected_first = lazy_teacher_pyramid(teacher, images, MASK, with_class_logits=True)
    expected_again = lazy_teacher_pyramid(teacher, images, other_mask, with_class_logits=True)
    _assert_same_pyramid(first, expected_first)
    _assert_same_pyramid(again, expected_again)
    assert cache.pyramid(images, torch.zeros(4, 4, dtype=torch.bool)) == {}


def test_a_flipped_image_is_a_new_entry(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    cache = TeacherFeatureCache(teacher, 1.0)
    image = torch.zeros(1, 3, 64, 64)
    image[..., :10] = 1.0  # not left-right symmetric; rows are constant
    flipped = image.flip(-1)
    assert image_digest(image[0]) != image_digest(flipped[0])
    everything = torch.ones(1, 4, dtype=torch.bool)
    cache.pyramid(image, everything)
    got = cache.pyramid(flipped, everything)
    assert len(cache) == 2
    _assert_same_pyramid(got, lazy_teacher_pyramid(teacher, flipped, everything))


def test_cache_keeps_to_its_budget_and_still_answers(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    images = torch.rand(4, 3, 64, 64)
    everything = torch.ones(4, 4, dtype=torch.bool)
    probe = TeacherFeatureCache(teacher, 1.0)
    probe.pyramid(images[:1], everything[:1])
    one_image_gb = probe.stored_bytes / 1024**3
    cache = TeacherFeatureCache(teacher, 2.5 * one_image_gb)
    got = cache.pyramid(images, everything)
    assert len(cache) == 2 and cache.stored_bytes <= cache.max_bytes
    _assert_same_pyramid(got, lazy_teacher_pyramid(teacher, images, everything))
    with pytest.raises(ValueError, match="max_gb"):
        TeacherFeatureCache(teacher, 0.0)


def test_an_entry_without_class_logits_is_recomputed_when_they_are_asked_for(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    cache = TeacherFeatureCache(teacher, 1.0)
    images = torch.rand(2, 3, 64, 64)
    everything = torch.ones(2, 4, dtype=torch.bool)
    cache.pyramid(images, everything)
    without = cache.stored_bytes
    got = cache.pyramid(images, everything, with_class_logits=True)
    assert len(cache) == 2 and cache.stored_bytes > without
    _assert_same_pyramid(got, lazy_teacher_pyramid(teacher, images, everything, True))


def test_kd_step_with_cache_updates_the_student_as_without(tiny_teacher, tiny_student):
    teacher = freeze_teacher(tiny_teacher)
    batch = two_box_batch()
    mask = torch.tensor([[True, False, True, False], [False, True, True, True]])
    cache = TeacherFeatureCache(teacher, 1.0)
    initial_objective = DistillationObjective(DistillConfig(loss="pkd"), 16, 32, 3)
    students = []
    for teacher_cache in (None, cache, cache):  # lazy, cache filling, cache answering
        student = copy.deepcopy(tiny_student)
        objective = copy.deepcopy(initial_objective)
        optimizer = torch.optim.SGD([*student.parameters(), *objective.kd.parameters()], lr=0.1)
        kd_training_step(
            student, teacher, objective, optimizer, batch, mask, teacher_cache=teacher_cache
        )
        students.append(student.state_dict())
    assert cache.hits == 2 and cache.misses == 2
    for name, value in students[0].items():
        torch.testing.assert_close(students[1][name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(students[2][name], value, rtol=1e-5, atol=1e-6)


def test_an_entry_does_not_depend_on_the_batch_it_was_computed_in(tiny_teacher):
    teacher = freeze_teacher(tiny_teacher)
    images = torch.rand(6, 3, 64, 64)
    everything = torch.ones(6, 4, dtype=torch.bool)
    # one cache filled batch by batch in one order, the other all at once in another
    first, second = TeacherFeatureCache(teacher, 1.0), TeacherFeatureCache(teacher, 1.0)
    for rows in ([0, 1], [2, 3, 4], [5]):
        first.pyramid(images[rows], everything[rows])
    order = [5, 3, 1, 0, 2, 4]
    second.pyramid(images[order], everything[order])
    got_first = first.pyramid(images, everything)
    got_second = second.pyramid(images, everything)
    for level in got_first:
        assert torch.equal(got_first[level].features, got_second[level].features)
    alone = lazy_teacher_pyramid(teacher, images[2:3], everything[2:3])
    assert torch.equal(got_first["P3"].features[2:3], alone["P3"].features)
