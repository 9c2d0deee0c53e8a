"""A Ray Tune sweep: RL lambdas, NAS methods, the static grid and baselines over seeds, one report.

python scripts/sweep.py --config configs/sweep.yaml [--address auto] [--resume] [--set k=v] [--out DIR]

Exit status: 0 when every trial finished, 1 when some errored (listed with their error files) or
diverged (listed as failed in the report),
130 when interrupted (Ctrl+C saves Tune's state; --resume continues), 143 when stopped by SIGTERM
(--resume continues from Tune's last saved state), 2 on bad input.
"""

from __future__ import annotations

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.tune.sweep import run_sweep
from rlpkd.rundir import run_lock


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-sweep")
    parser.add_argument(
        "--address",
        default=None,
        help="join a running Ray cluster: 'auto' (on a cluster node) or 'ray://HEAD:10001'",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (finished trials stay)"
    )
    args = parser.parse_args()
    config = config_from_args(args)  # the whole config, before any write
    with run_lock(config.runtime.out):
        outcome = run_sweep(
            config, address=args.address, resume=args.resume, progress=config.runtime.progress
        )
    if outcome["errored"] or outcome["diverged"]:
        return 1
    return 130 if outcome["unfinished"] else 0


if __name__ == "__main__":
    run_cli(main, resumable=True)
