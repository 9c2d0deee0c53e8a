"""The cost of the RL machinery (DESIGN §9), side by side with the fixed all-level KD step.

- policy-guided step: the frozen policy observes the student's pyramid, picks each sample's levels,
  then the KD step runs with that mask; compared with the *same* masks given as fixed levels.
- env step: what ``LevelSelectionEnv.step`` does per update while the policy learns — the gap on
  all levels before and after, the update, the next observation; compared with one all-level step.
"""

from __future__ import annotations

import torch

from envs.observation import OBS_DIM, new_running_gap, sample_observations
from experiments.bench.kd_step_speed import build_kd_bench, time_steps
from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from rlpkd.config import ModelConfig
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.training.kd_step import kd_losses_no_grad, kd_training_step

__all__ = ["benchmark_rl_overhead"]


def benchmark_rl_overhead(
    teacher_spec: ModelConfig,
    student_spec: ModelConfig,
    image_size: int,
    batch_size: int,
    device: torch.device,
    steps: int = 5,
    warmup: int = 2,
    num_classes: int = 80,
    kd_loss: str = "mse",
    hidden_sizes: tuple[int, ...] = (64, 64),
) -> dict[str, float]:
    """Milliseconds per step of each kind and the ratios to the fixed all-level KD step."""

    bench = build_kd_bench(
        teacher_spec, student_spec, image_size, batch_size, device, num_classes, kd_loss
    )
    teacher, student, objective, batch = bench.teacher, bench.student, bench.objective, bench.batch
    optimizer, thresholds = bench.optimizer, bench.thresholds
    policy = PolicyLevels(
        build_level_module(OBS_DIM, list(hidden_sizes)).to(device), thresholds, student=student
    )
    all_levels = torch.ones(batch_size, NUM_LEVELS, dtype=torch.bool)
    policy_mask = policy.select(batch, 0.5)

    def fixed_all():
        kd_training_step(student, teacher, objective, optimizer, batch, all_levels)

    def fixed_policy_mask():
        kd_training_step(student, teacher, objective, optimizer, batch, policy_mask)

    def policy_guided():
        mask = policy.select(batch, 0.5)
        terms = kd_training_step(student, teacher, objective, optimizer, batch, mask)
        policy.update_running_gap(terms.kd_raw, mask)

    running_gap = new_running_gap()

    def env_step():
        kd_losses_no_grad(student, teacher, objective, batch, all_levels)
        kd_training_step(student, teacher, objective, optimizer, batch, policy_mask)
        kd_losses_no_grad(student, teacher, objective, batch, all_levels)
        sample_observations(student, batch, running_gap.scale, 0.5, 0.0, thresholds)

    ms = {
        name: 1e3 * time_steps(fn, device, warmup, steps)
        for name, fn in (
            ("fixed_all_ms", fixed_all),
            ("fixed_same_mask_ms", fixed_policy_mask),
            ("policy_guided_ms", policy_guided),
            ("env_step_ms", env_step),
        )
    }
    return {
        **ms,
        "policy_levels_per_sample": float(policy_mask.sum()) / batch_size,
        "policy_guided_vs_same_fixed_mask": ms["policy_guided_ms"] / ms["fixed_same_mask_ms"],
        "policy_guided_vs_fixed_all": ms["policy_guided_ms"] / ms["fixed_all_ms"],
        "env_step_vs_fixed_all": ms["env_step_ms"] / ms["fixed_all_ms"],
        "levels": len(LEVELS),
    }
