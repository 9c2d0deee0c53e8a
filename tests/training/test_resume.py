"""An interrupted student run resumes after its last finished epoch and ends where a clean run does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlpkd.training.level_selection import RandomLevels
from tests.conftest import distil_on_cpu, tiny_distillation_inputs


class Interrupt(Exception):
    pass


def test_resume_continues_from_checkpoint_without_redoing_steps(tiny_config, tmp_path):
    config = dataclasses.replace(
        tiny_config, student_schedule=dataclasses.replace(tiny_config.student_schedule, epochs=2)
    )
    datasets, teacher, flops = tiny_distillation_inputs(config)

    def run(checkpoint, on_step=None):
        selector = RandomLevels(0.5, 0.5, seed=3)
        return distil_on_cpu(
            config, datasets, teacher, selector, flops, on_step=on_step, checkpoint_path=checkpoint
        )

    clean, _, clean_stats = run(tmp_path / "clean.pt")
    steps_per_epoch = clean_stats.images // config.student_schedule.batch_size // 2

    def interrupt_in_second_epoch(step, batch, mask, terms):
        if step == steps_per_epoch + 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "resumed.pt", interrupt_in_second_epoch)
    done_steps = []
    resumed, _, resumed_stats = run(
        tmp_path / "resumed.pt", lambda s, b, m, t: done_steps.append(s)
    )
    assert done_steps == list(range(steps_per_epoch + 1, 2 * steps_per_epoch + 1))
    assert resumed_stats.images == clean_stats.images
    assert resumed_stats.level_counts == clean_stats.level_counts
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
