"""The budget study: at each KD budget, the learnt policy against every control at the same cost.

python scripts/budget_study.py --config configs/default.yaml [--budgets 0.3 0.5 0.7]
       [--seeds 0 1 2] [--controls [NAME ...]] [--static-front [LEVELS ...]] [--out DIR]
       [--set key=value ...] [--debug]

Runs train_rl once per budget (rl.budget) into <out>/budget-<b>, every control of
experiments/controls.py on every seed, the teacher, snapshot pool, decision bank and the no-KD and
all-level students made once and shared; then the static front: every fixed level subset (or
those of --static-front; --static-front alone: none) over the same seeds, once. Writes
<out>/budget_study.{json,md,png}: per budget, the policy's measured cost, policy − each control
in AP paired by seed with a 95% t interval; the static subsets and their front; and AP against
kd FLOPs for every method.
"""

from __future__ import annotations

import dataclasses

from experiments.budget_study import run_budget_study
from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.static_front import ALL_STATIC_SPECS, static_front_jobs
from rlpkd.errors import ConfigError
from rlpkd.rundir import run_lock


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-budget-study")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="experiment.seeds")
    parser.add_argument(
        "--controls",
        nargs="*",
        default=None,
        metavar="NAME",
        help="train only these controls of experiments/controls.py (experiment.controls); "
        "--controls alone: none, the policy against no KD and all levels",
    )
    parser.add_argument(
        "--static-front",
        nargs="*",
        default=None,
        metavar="LEVELS",
        help="the static subsets trained for the front, e.g. P3 P4,P5 all (default: all 16; "
        "--static-front alone: none)",
    )
    args = parser.parse_args()
    if args.controls is not None:
        args.overrides.append(f"experiment.controls=[{','.join(args.controls)}]")
    config = config_from_args(args)
    bad = [b for b in args.budgets if not 0.0 < b < 1.0]
    if bad:
        raise ConfigError(
            f"--budgets {bad[0]}: a budget is a fraction of all-level kd FLOPs in (0, 1)"
        )
    if args.seeds is not None:
        experiment = dataclasses.replace(config.experiment, seeds=list(args.seeds))
        config = dataclasses.replace(config, experiment=experiment)
    static_specs = ALL_STATIC_SPECS if args.static_front is None else args.static_front
    static_front_jobs(static_specs, [])  # a bad subset: one line, before the lock or any write
    with run_lock(config.runtime.out):
        record = run_budget_study(config, args.budgets, static_specs)
    for entry in record["budgets"]:
        comparison = entry["comparison"]
        print(
            f"budget {entry['budget']:.2f}: policy spent {comparison['policy_kd_fraction']:.3f} "
            f"({'held' if comparison['policy_holds_budget'] else 'NOT held'})"
        )
    print(f"report: {config.runtime.out}/budget_study.md")
    return 0


if __name__ == "__main__":
    run_cli(main)
