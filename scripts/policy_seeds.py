"""Does Phase 2 learn, and do its PPO seeds agree? PPO per seed on one decision bank.

python scripts/policy_seeds.py --config configs/default.yaml [--seeds 0 1 2]
       [--teacher teacher.pt] [--out DIR] [--set key=value ...]

Collects (or reuses, by fingerprint) the snapshot pool and the decision bank of the config's
runtime.seed in <out>/checkpoints/snapshots, runs PPO once per seed on it and writes
<out>/policy_seeds.{json,md}: each seed's held-out score, entropy, verdict and weights digest,
and the share of held-out contexts on which each pair of seeds' greedy choices agree.
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.policy_seeds import run_policy_seeds
from rlpkd.rundir import run_lock


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-policy-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this teacher.pt")
    args = parser.parse_args()
    teacher = [(args.teacher, "--teacher")] if args.teacher is not None else []
    config = config_from_args(args, input_files=teacher)
    with run_lock(config.runtime.out):
        record = run_policy_seeds(config, args.seeds, args.teacher)
    score = record["summary"]["heldout_score"]
    print(
        f"held-out score {score['mean']:.3f} +- {score['std']:.3f} over {score['n']} seeds "
        f"(static {record['references']['static_score']:.3f}, predictor "
        f"{record['references']['predictor_score']:.3f}); lowest agreement "
        f"{100 * record['min_agreement']:.1f}%"
    )
    print(f"report: {config.runtime.out}/policy_seeds.md")
    return 0


if __name__ == "__main__":
    run_cli(main)
