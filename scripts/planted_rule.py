"""Does the level policy find a planted rule? (DVRL-style sanity check, Yoon et al. 2020.)

python scripts/planted_rule.py --config configs/planted.yaml [--rewards value]
       [--seeds 0 1 2] [--teacher teacher.pt] [--out DIR] [--set key=value ...]

The config must set ``distill.planted_class`` (and ``distill.planted_levels``): teacher targets at
those levels are corrupted on images holding that class. For each reward and seed, PPO learns a
policy (Phase 2 only); each is scored by the AUROC of its level choices against the planted
"do not distil" labels on held-out decisions. Writes <out>/planted_rule.{json,md}.

``value`` learns on the decision bank (``rl.learner: bank``). ``gap_drop`` gives no reward for
the subsets not chosen, so it learns on the live env with the config's PPO settings, which
``configs/planted.yaml`` sizes for the bank (30 x 8192 decisions); give it live-sized ones, e.g.
``--rewards gap_drop --set rl.iterations=20 --set rl.train_batch_size=256
--set rl.minibatch_size=128 --set rl.num_epochs=8 --set rl.lr=0.002`` (the settings of the
live-env runs in docs/results.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.planted_rule import run_planted_experiment
from rlpkd.errors import ConfigError
from rlpkd.rundir import run_lock

DEBUG_PLANTED = ("distill.planted_class=2", "distill.planted_levels=[P2,P3]")
"""What ``--debug`` plants (configs/planted.yaml's rule: P2, P3 on images holding a triangle)."""


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-planted-rule")
    parser.add_argument("--rewards", nargs="+", default=["value"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this teacher.pt")
    args = parser.parse_args()
    if args.debug:  # the debug data plants configs/planted.yaml's rule, on one seed
        args.overrides = [*DEBUG_PLANTED, *args.overrides]
        args.seeds = args.seeds if "--seeds" in sys.argv else [0]
    teacher = [(args.teacher, "--teacher")] if args.teacher is not None else []
    config = config_from_args(args, input_files=teacher)
    if config.distill.planted_class < 0:
        raise ConfigError(
            f"{args.config or 'defaults'}: distill.planted_class is -1; set it (e.g. --set "
            "distill.planted_class=2) to plant a rule"
        )
    with run_lock(config.runtime.out):
        record = run_planted_experiment(config, args.rewards, args.seeds, args.teacher)
    for reward, summary in record["summary"].items():
        auroc = summary["auroc_planted_levels"]
        print(f"{reward}: AUROC {auroc['mean']:.3f} +- {auroc['std']:.3f} over {auroc['n']} seeds")
    print(f"report: {config.runtime.out}/planted_rule.md")
    return 0


if __name__ == "__main__":
    run_cli(main)
