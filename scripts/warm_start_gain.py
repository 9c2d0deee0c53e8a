"""Does the Reptile warm start speed up PPO? Warm vs scratch, per seed (Phase 2 only).

python scripts/warm_start_gain.py --config configs/default.yaml --meta-weights W.pt
       [--seeds 0 1 2] [--teacher teacher.pt] [--out DIR] [--set key=value ...]

W.pt is a meta-policy from scripts/meta_train.py (same rl.hidden_sizes, rl.policy_head and
observation size). For each seed PPO runs rl.iterations from W.pt and from scratch on the same env;
writes <out>/warm_start_gain.{json,md}: iterations to 90% of the scratch curve's rise, per seed
and mean ± std.
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.warm_start_gain import run_warm_start_gain
from rlpkd.errors import UserError
from rlpkd.rundir import run_lock

DEBUG_META_WEIGHTS = Path("runs/debug-meta-train/checkpoints/meta_policy.pt")
"""What ``scripts/meta_train.py --debug`` writes."""


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-warm-start-gain")
    parser.add_argument(
        "--meta-weights",
        type=Path,
        default=None,
        help=f"meta-policy weights (with --debug default {DEBUG_META_WEIGHTS})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this teacher.pt")
    args = parser.parse_args()
    if args.meta_weights is None and not args.debug:
        parser.error("the following arguments are required: --meta-weights (or --debug)")
    if args.debug:  # meta_train --debug's weights, one seed
        args.meta_weights = args.meta_weights or DEBUG_META_WEIGHTS
        args.seeds = args.seeds or [0]
        if not args.meta_weights.is_file():
            raise UserError(
                f"no meta-policy weights at {args.meta_weights}; run scripts/meta_train.py --debug first"
            )
    args.seeds = args.seeds or [0, 1, 2]
    inputs = [(args.meta_weights, "--meta-weights")]
    if args.teacher is not None:
        inputs.append((args.teacher, "--teacher"))
    # as meta.warm_start, the weights get the run's checks (hidden sizes, policy head) before
    # anything is written; every PPO run of the measurement warm-starts from them anyway
    args.overrides = [*args.overrides, f"meta.warm_start={args.meta_weights}"]
    config = config_from_args(args, input_files=inputs)
    with run_lock(config.runtime.out):
        record = run_warm_start_gain(config, args.meta_weights, args.seeds, args.teacher)
    for key, summary in record["summary"].items():
        print(f"{key}: {summary['mean']:.1f} +- {summary['std']:.1f} (n={summary['n']})")
    print(f"report: {config.runtime.out}/warm_start_gain.md")
    return 0


if __name__ == "__main__":
    run_cli(main)
