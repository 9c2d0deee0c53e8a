"""The fixed-level KD comparison: teacher, then students (none / all levels / single levels)."""

from __future__ import annotations

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.fixed_level_comparison import run_fixed_level_comparison
from rlpkd.rundir import run_lock


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-run-fixed-levels")
    config = config_from_args(parser.parse_args())  # the whole config, before any write
    with run_lock(config.runtime.out):
        report = run_fixed_level_comparison(config)
    print(f"report: {config.runtime.out}/report.md  (wall time {report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
