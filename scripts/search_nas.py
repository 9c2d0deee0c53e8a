"""One NAS baseline end to end: search a static level subset, retrain it, evaluate it.

python scripts/search_nas.py --method {darts,gdas,evolution,random,exhaustive} --config FILE
       [--seed N] [--set key=value ...] [--out DIR] [--debug]

The search sees only the training split (``search.holdout_fraction`` of it held out for scoring);
the pick is retrained on ``student_schedule`` and evaluated on val. Writes ``<out>/search.json``
(pick, cost, trace) and the run directory of DESIGN §11.
"""

from __future__ import annotations

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.search_retrain import run_search_experiment
from rlpkd.errors import UserError
from rlpkd.rundir import run_lock
from rlpkd.search.methods import search_method_names

DEBUG_METHOD = "evolution"


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-search-nas")
    parser.add_argument(
        "--method",
        default=None,
        choices=search_method_names(),
        help=f"the search method (with --debug default {DEBUG_METHOD})",
    )
    parser.add_argument("--seed", type=int, default=None, help="search and student seed")
    args = parser.parse_args()
    if args.method is None and not args.debug:
        parser.error("the following arguments are required: --method (or --debug)")
    args.method = args.method or DEBUG_METHOD
    config = config_from_args(args)  # the whole config, before any write
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed {args.seed}: a seed must be >= 0")
    with run_lock(config.runtime.out):
        metrics = run_search_experiment(config, args.method, args.seed)
    print(
        f"{args.method} picked {metrics['levels']}: AP {100 * metrics['AP']:.1f} "
        f"(kd {metrics['kd_gflops']:.3f} GFLOPs/image) after a search of "
        f"{metrics['search_wall_time_s']:.0f} {metrics['search_device']}-seconds; "
        f"results in {config.runtime.out}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
