"""Speed of the KD training step, side by side in one run (DESIGN §9); prints ratios and TFLOP/s.

Default (GPU): R50-FPN teacher -> R18-FPN student at 512 px, all levels vs P4-P5 vs no KD, against
torchvision's FCOS KD loop; then the RL machinery: the policy-guided step against the same masks
as fixed levels, and the env step against the all-level step. --cpu-preset shrinks it to run on a
CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json

from experiments.bench.gradnorm_speed import benchmark_gradnorm
from experiments.bench.kd_step_speed import StepBenchSettings, benchmark_kd_steps
from experiments.bench.rl_step_speed import benchmark_rl_overhead
from experiments.bench.teacher_cache_speed import benchmark_teacher_cache
from experiments.cli import run_cli
from rlpkd.config import ModelConfig
from rlpkd.runtime import resolve_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--kd-loss", default="mse")
    parser.add_argument("--no-torchvision", action="store_true")
    parser.add_argument("--cpu-preset", action="store_true", help="128 px, batch 4, 3 steps")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--debug", action="store_true", help="64 px, batch 2, 1 step: a smoke run, no numbers"
    )
    args = parser.parse_args()
    if args.cpu_preset:
        args.image_size, args.batch_size, args.steps, args.warmup = 128, 4, 3, 1
    if args.debug:
        args.image_size, args.batch_size, args.steps, args.warmup = 64, 2, 1, 0
    device = resolve_device(args.device)
    settings = StepBenchSettings(
        ModelConfig(depth=50),
        ModelConfig(depth=18),
        args.image_size,
        args.batch_size,
        device,
        steps=args.steps,
        warmup=args.warmup,
        kd_loss=args.kd_loss,
    )
    result = benchmark_kd_steps(settings, with_torchvision=not args.no_torchvision)
    result["rl_overhead"] = benchmark_rl_overhead(settings)
    result["gradnorm"] = benchmark_gradnorm(settings)
    result["teacher_cache"] = benchmark_teacher_cache(settings)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"device={device} image={args.image_size} batch={args.batch_size} steps={args.steps}")
    print(f"{'step':32s} {'ms':>9s} {'img/s':>9s} {'GFLOP/img':>10s} {'TFLOP/s':>8s}")
    for t in result["timings"]:
        print(
            f"{t['name']:32s} {t['step_ms']:9.1f} {t['images_per_s']:9.2f} "
            f"{t['gflops_per_image']:10.1f} {t['achieved_tflops']:8.3f}"
        )
    for name, value in result["ratios"].items():
        print(f"{name}: {value:.3f}")
    print("RL machinery (same process, same batch):")
    for name, value in result["rl_overhead"].items():
        print(f"  {name}: {value:.3f}")
    print("GradNorm (same process, same batch, all levels):")
    for name, value in result["gradnorm"].items():
        print(f"  {name}: {value:.3f}")
    print("Teacher cache (same process, same batch, all levels; filled first):")
    for name, value in result["teacher_cache"].items():
        print(f"  {name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
