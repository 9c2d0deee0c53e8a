"""Check the per-(sample, level) value signal against real training steps on a config.

python scripts/validate_level_value.py --config FILE [--seeds 0 1 2] [--warmup-steps N]
       [--masks K] [--heldout-size N] [--teacher teacher.pt] [--set key=value ...] [--debug]

For each seed: a fresh student trains N steps on the training split (minus its held-out part),
then K random level masks are each applied in one real step from the same state; prints the
Spearman rho between predicted and measured held-out detection-loss drops, and the value signal's
cost in GFLOPs per decision (see rlpkd.distill.level_value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.level_value_validation import validate_on_config
from rlpkd.runtime import resolve_device


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-validate-level-value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup-steps", type=int, default=10, help="training steps before")
    parser.add_argument("--masks", type=int, default=32, help="random masks per seed")
    parser.add_argument("--heldout-size", type=int, default=16, help="images in V")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher.pt (else untrained)")
    args = parser.parse_args()
    config = config_from_args(args)
    device = resolve_device(config.runtime.device)
    rhos = []
    for seed in args.seeds:
        result = validate_on_config(
            config,
            args.teacher,
            seed=seed,
            warmup_steps=args.warmup_steps,
            num_masks=args.masks,
            heldout_size=args.heldout_size,
            device=device,
        )
        rhos.append(result.rho)
        print(
            f"seed {seed}: Spearman rho {result.rho:.3f} over {args.masks} masks "
            f"(value {result.gflops_per_decision:.4f} GFLOPs per decision)"
        )
    print(f"rho mean {np.mean(rhos):.3f} +- {np.std(rhos):.3f} over {len(rhos)} seeds")
    return 0


if __name__ == "__main__":
    run_cli(main)
