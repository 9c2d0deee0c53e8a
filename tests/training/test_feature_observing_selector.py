"""A selector that observes the student reads the step's own training-mode forward (no second one)."""

from __future__ import annotations

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.levels import NUM_LEVELS
from rlpkd.training.level_selection import FeatureObservingSelector
from tests.conftest import distil_on_cpu, tiny_distillation_inputs


class RecordingSelector:
    """Distils P2 on even samples and P5 on odd ones; records what it was shown."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, torch.Tensor], float]] = []
        self.student: torch.nn.Module | None = None
        self.forwards = 0

    def set_student(self, student: torch.nn.Module) -> None:
        self.student = student
        student.register_forward_hook(self._count)

    def _count(self, *_: object) -> None:
        self.forwards += 1

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        raise AssertionError("the loop must use select_from_features")

    def select_from_features(
        self, batch: DetectionBatch, features: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        assert self.student is not None and self.student.training  # the step's training forward
        assert all(not value.requires_grad for value in features.values())
        self.calls.append((features, progress))
        mask = torch.zeros(len(batch), NUM_LEVELS, dtype=torch.bool)
        mask[0::2, 0] = True
        mask[1::2, 3] = True
        return mask


def test_the_loop_hands_the_steps_own_features_and_runs_one_forward_per_step(tiny_config):
    datasets, teacher, flops = tiny_distillation_inputs(tiny_config)
    selector = RecordingSelector()
    assert isinstance(selector, FeatureObservingSelector)
    _, _, stats = distil_on_cpu(tiny_config, datasets, teacher, selector, flops)
    steps = len(selector.calls)
    assert steps > 0 and selector.forwards == steps  # one student forward per step, not two
    assert [progress for _, progress in selector.calls] == sorted(p for _, p in selector.calls)
    assert stats.level_counts[0] > 0 and stats.level_counts[3] > 0
    assert stats.level_counts[1] == stats.level_counts[2] == 0
