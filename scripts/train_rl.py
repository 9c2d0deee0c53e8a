"""RL-PyramidKD end to end: data, teacher, PPO level policy, policy-guided KD, baselines, report.

python scripts/train_rl.py --config configs/default.yaml [--debug] [--gpu N] [--out DIR] [--resume]
"""

from __future__ import annotations

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.rl_pipeline import run_rl_experiment
from rlpkd.rundir import run_lock


def main() -> int:
    parser = config_argument_parser(__doc__)
    parser.add_argument("--gpu", type=int, default=None, help="train on CUDA device N")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoints"
    )
    args = parser.parse_args()
    if args.gpu is not None:
        args.overrides.append(f"runtime.device=cuda:{args.gpu}")
    config = config_from_args(args)  # the whole config and its inputs, before any write
    with run_lock(config.runtime.out):
        report = run_rl_experiment(config, resume=args.resume)
    print(f"report: {config.runtime.out}/report.md  (wall time {report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main, resumable=True)
