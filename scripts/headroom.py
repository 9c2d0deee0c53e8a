"""The headroom report: how much a per-sample level choice can gain on a config's data.

python scripts/headroom.py --config FILE [--out DIR] [--teacher teacher.pt]
       [--value-batches N] [--heldout-size N] [--subsets none all P2,P4 ...] [--set key=value ...]

Writes <out>/headroom.md, <out>/headroom.json and <out>/plots/headroom*.png: the sample x level
interaction share of the per-(sample, level) value matrices at the snapshot students (overall and
by image regime), the best static level subset per regime, and the per-image oracle (each image
its regime's best subset) against the best static subset at <= its kd GFLOPs, all levels and the
scale rule over experiment.seeds. Students, the teacher and the snapshot pool are reused from
<out> when they finished with the same config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.headroom import (
    HeadroomOptions,
    check_headroom_inputs,
    parse_subsets,
    run_headroom,
)
from rlpkd.levels import all_subsets, format_levels
from rlpkd.rundir import run_lock

VALUE_BATCHES = 8
DEBUG_VALUE_BATCHES = 2


def _value_batches(args: argparse.Namespace) -> int:
    """--value-batches as given (0 too: the run's check says what is wrong), else the default."""
    if args.value_batches is not None:
        return args.value_batches
    return DEBUG_VALUE_BATCHES if args.debug else VALUE_BATCHES


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-headroom")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint")
    parser.add_argument(
        "--value-batches",
        type=int,
        default=None,
        help=f"training batches valued per snapshot (default {VALUE_BATCHES}; {DEBUG_VALUE_BATCHES} "
        "with --debug, whose data holds 3)",
    )
    parser.add_argument("--heldout-size", type=int, default=16, help="images in held-out V")
    parser.add_argument(
        "--subsets",
        nargs="+",
        default=[format_levels(s) for s in all_subsets()],
        help="static level subsets to train (default: all 16)",
    )
    args = parser.parse_args()
    teacher_file = [(args.teacher, "--teacher checkpoint")] if args.teacher is not None else []
    config = config_from_args(args, teacher_file)  # the whole config and inputs, before any write
    options = HeadroomOptions(
        value_batches=_value_batches(args),
        heldout_size=args.heldout_size,
        subsets=parse_subsets(args.subsets),
        teacher_path=args.teacher,
    )
    check_headroom_inputs(config, options)
    with run_lock(config.runtime.out):
        report = run_headroom(config, options)
    out = config.runtime.out
    print(f"report: {out}/headroom.md  (wall time {report['wall_time_s']['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
