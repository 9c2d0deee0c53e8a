"""Generate the embedded synthetic detection dataset (COCO format).

Example: python scripts/make_dataset.py --out data/embedded --num-train 800 --num-val 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.cli import check_out_dir
from rlpkd.data.synthetic import (
    PER_IMAGE,
    REGIMES,
    generate_embedded_dataset,
    image_regimes,
    object_size_counts,
)
from rlpkd.errors import UserError

DEBUG_SIZES = (48, 12, 64)
"""(train images, val images, side in px) of ``--debug``."""
DEBUG_OUT = Path("runs/debug-dataset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output dataset directory")
    parser.add_argument("--num-train", type=int, default=800, help="training images")
    parser.add_argument("--num-val", type=int, default=200, help="validation images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    # Not argparse choices: the library's ConfigError lists the valid regimes in one line.
    parser.add_argument(
        "--regime",
        default=PER_IMAGE,
        help=f"object-scale regime: {', '.join(REGIMES)} (default: {PER_IMAGE}, one per image)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"a small dataset ({DEBUG_SIZES}) into {DEBUG_OUT} unless --out is given",
    )
    args = parser.parse_args(argv)
    if args.debug:
        args.num_train, args.num_val, args.size = DEBUG_SIZES
        args.out = args.out or DEBUG_OUT
    if args.out is None:
        parser.error("the following arguments are required: --out (or --debug)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate the dataset and print its size-bin counts; 2 on a user error."""
    args = parse_args(argv)
    try:
        if args.seed < 0:
            raise UserError(f"--seed {args.seed}: a seed must be >= 0")
        check_out_dir(args.out)
        out = generate_embedded_dataset(
            args.out, args.num_train, args.num_val, args.size, args.seed, args.regime, progress=True
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split in ("train", "val"):
        annotation_file = out / "annotations" / f"{split}.json"
        counts = object_size_counts(annotation_file)
        print(f"{split}: " + ", ".join(f"{key}={value}" for key, value in counts.items()))
        if args.regime == PER_IMAGE:
            regimes = list(image_regimes(annotation_file).values())
            per_regime = {name: regimes.count(name) for name in sorted(set(regimes))}
            print(
                f"{split} images by regime: " + ", ".join(f"{k}={v}" for k, v in per_regime.items())
            )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
