"""How many val images bring a paired AP difference's std down? (measured before a budget study)

python scripts/val_size.py --config C --run DIR --methods rl-policy all [--seeds 0 1 2]
       [--sizes 200 400 800 1600] [--draws 20] [--out DIR] [--set data.num_val=1600]

Evaluates the two methods' finished students of the train_rl run DIR on the config's val set
(set data.num_val at least max(--sizes): same training images, more val images) and, per size,
the std of the paired difference from the val images drawn and across seeds
(experiments/val_size.py). Writes <out>/val_size.{json,md}.
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import check_input_file, config_argument_parser, config_from_args, run_cli
from experiments.val_size import val_size_study, write_val_size
from rlpkd.errors import ConfigError


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-val-size")
    parser.add_argument(
        "--run", type=Path, default=None, help="a train_rl run directory (--debug: runs/debug)"
    )
    parser.add_argument("--methods", nargs=2, default=["rl-policy", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default 200 … 1600")
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    if args.run is None and not args.debug:
        parser.error("the following arguments are required: --run (or --debug)")
    config = config_from_args(args)
    if args.debug:  # make debug's run, its seeds, half and all of its val images
        args.run = args.run or Path("runs/debug")
        args.seeds = args.seeds or list(config.experiment.seeds)
        args.sizes = args.sizes or [config.data.num_val // 2, config.data.num_val]
    args.seeds = args.seeds or [0, 1, 2]
    args.sizes = args.sizes or [200, 400, 800, 1600]
    check_input_file(args.run / "students", "--run's students", directory=True)
    if max(args.sizes) > config.data.num_val:
        raise ConfigError(
            f"--sizes {max(args.sizes)}: data.num_val is {config.data.num_val}; set "
            f"--set data.num_val={max(args.sizes)}"
        )
    record = val_size_study(
        config, args.run, tuple(args.methods), args.seeds, args.sizes, args.draws
    )
    write_val_size(record, Path(config.runtime.out))
    print(f"report: {config.runtime.out}/val_size.md")
    return 0


if __name__ == "__main__":
    run_cli(main)
