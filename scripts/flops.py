"""Print the per-image FLOPs model of a config: kd_gflops per level set and student_train_gflops.

Example: python scripts/flops.py --config configs/default.yaml --levels P2,P4 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import config_argument_parser, config_from_args
from rlpkd.errors import UserError
from rlpkd.flops.kd_flops import default_num_classes, flops_model_from_config, level_set_key
from rlpkd.levels import all_subsets, parse_levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = config_argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", default=None, help="one level set (none, all or e.g. P2,P4); default: all 16"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="detector classes (default: 6 for embedded data, 80 for COCO)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the FLOPs table; 2 on a user error."""
    args = parse_args(argv)
    try:
        config = config_from_args(args, check_inputs=False)  # writes nothing, reads no data
        num_classes = default_num_classes(config) if args.num_classes is None else args.num_classes
        model = flops_model_from_config(config, num_classes)
        level_sets = all_subsets() if args.levels is None else [parse_levels(args.levels)]
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    kd_gflops = {level_set_key(levels): model.kd_gflops(levels) for levels in level_sets}
    student_gflops = model.student_train_gflops()
    if args.json:
        result = {
            "image_size": config.data.image_size,
            "kd_loss": config.distill.loss,
            "num_classes": num_classes,
            "kd_gflops": kd_gflops,
            "student_train_gflops": student_gflops,
        }
        print(json.dumps(result, indent=2))
        return 0

    print(
        f"teacher R{config.teacher.depth} x{config.teacher.width} "
        f"(FPN {config.teacher.fpn_channels}), student R{config.student.depth} "
        f"x{config.student.width} (FPN {config.student.fpn_channels}), "
        f"kd loss {config.distill.loss}, {config.data.image_size}px, {num_classes} classes"
    )
    print(f"{'levels':<14}{'kd_gflops':>12}{'fraction':>10}{'total_gflops':>14}")
    for levels in level_sets:
        gflops = model.kd_gflops(levels)
        print(
            f"{level_set_key(levels):<14}{gflops:>12.3f}{model.fraction(levels):>10.3f}"
            f"{gflops + student_gflops:>14.3f}"
        )
    print(f"student_train_gflops {student_gflops:.3f} per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
