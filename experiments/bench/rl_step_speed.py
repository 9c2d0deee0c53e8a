"""The cost of the RL machinery (DESIGN §9), side by side with the fixed all-level KD step.

- policy-guided step: the step's own student forward runs first, the frozen policy reads its
  (detached) pyramid and picks each sample's levels, then the KD step finishes with that mask;
  compared with the *same* masks given as fixed levels (goal: at most 1.05x).
- env step: what ``LevelSelectionEnv.step`` does per update while the policy learns — the gap on
  all levels before and after, the update, the next observation; compared with one all-level step.
"""

from __future__ import annotations

import torch

from envs.observation import new_running_gap, observation_dim, observations_from_features
from experiments.bench.kd_step_speed import StepBenchSettings, build_kd_bench
from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from rlpkd.levels import LEVELS, NUM_LEVELS
from rlpkd.training.kd_step import (
    detached_features,
    kd_losses_no_grad,
    kd_training_step,
    student_forward,
)

__all__ = ["benchmark_rl_overhead"]


def benchmark_rl_overhead(
    settings: StepBenchSettings, hidden_sizes: tuple[int, ...] = (64, 64)
) -> dict[str, float]:
    """Milliseconds per step of each kind and the ratios to the fixed all-level KD step."""

    bench = build_kd_bench(settings)
    teacher, student, objective, batch = bench.teacher, bench.student, bench.objective, bench.batch
    optimizer, thresholds = bench.optimizer, bench.thresholds
    device, batch_size = settings.device, settings.batch_size
    policy = PolicyLevels(
        build_level_module(observation_dim(settings.num_classes), list(hidden_sizes)).to(device),
        thresholds,
        student=student,
    )
    all_levels = torch.ones(batch_size, NUM_LEVELS, dtype=torch.bool)
    with torch.no_grad():  # the masks the policy-guided step picks, as fixed levels
        features = student_forward(student, batch).features
    policy_mask = policy.select_from_features(batch, features, 0.5)

    def fixed_all():
        bench.kd_step(all_levels)

    def fixed_policy_mask():
        bench.kd_step(policy_mask)

    def policy_guided():  # as distill_student runs it: the policy reads the step's own forward
        output = student_forward(student, batch)
        features = detached_features(output)
        mask = policy.select_from_features(batch, features, 0.5)
        terms = kd_training_step(student, teacher, objective, optimizer, batch, mask, output=output)
        policy.update_running_gap(terms.kd_raw, mask)

    running_gap = new_running_gap()

    def env_step():  # as LevelSelectionEnv.step + _observations run it
        kd_losses_no_grad(student, teacher, objective, batch, all_levels)
        output = student_forward(student, batch)
        features = detached_features(output)
        observations_from_features(
            features, batch, running_gap.scale, 0.5, thresholds, settings.num_classes
        )
        kd_training_step(student, teacher, objective, optimizer, batch, policy_mask, output=output)
        kd_losses_no_grad(student, teacher, objective, batch, all_levels)

    ms = {
        name: 1e3 * settings.seconds_per_step(fn)
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
