"""The full-size path on this machine: teacher forward, an all-level KD step, an env step and a
policy-guided step, each in fp32 and bf16, with loss parity and peak memory
(``experiments.full_size_path``).

Without COCO on disk it writes a few photo-sized images in COCO's format first (``--photos``);
with ``--photos 0`` it reads the config's own data paths (real COCO).

Example: python scripts/full_size_check.py --config configs/coco_r50_r18.yaml --set runtime.device=cpu
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import (
    check_out_dir,
    check_run_inputs,
    checked_config,
    config_argument_parser,
    run_cli,
)
from experiments.coco_photos import write_coco_photos
from experiments.full_size_path import check_overrides, run_full_size_check
from rlpkd.rundir import run_lock

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "coco_r50_r18.yaml"
DEBUG_OVERRIDES = ["data.image_size=128"]
"""``--debug``: the same models at 128 px, a check of the script in about a minute on 2 cores."""


def main() -> int:
    """Run the check and print one line per step and per disagreeing value."""
    parser = config_argument_parser(__doc__.splitlines()[0], debug_out="runs/debug-full-size-check")
    parser.add_argument("--photos", type=int, default=8, help="photos to write (0: real data)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step")
    args = parser.parse_args()
    out = args.out or Path(args.debug_out if args.debug else "runs/full_size_check")
    overrides = [*check_overrides(args.batch_size, "auto"), *args.overrides]
    if args.debug:
        overrides = [*DEBUG_OVERRIDES, *overrides]
    photos_dir = out / "photos"
    if args.photos > 0:
        overrides += [
            "data.source=coco",
            f"data.train_images={photos_dir / 'train2017'}",
            f"data.train_annotations={photos_dir / 'annotations' / 'instances_train2017.json'}",
            f"data.val_images={photos_dir / 'val2017'}",
            f"data.val_annotations={photos_dir / 'annotations' / 'instances_val2017.json'}",
        ]
    config = checked_config(
        args.config or DEFAULT_CONFIG, [*overrides, f"runtime.out={out}"], check_inputs=False
    )
    check_out_dir(out)
    with run_lock(out):
        if args.photos > 0:
            write_coco_photos(photos_dir, args.photos, 2, seed=config.runtime.seed)
        check_run_inputs(config)
        document = run_full_size_check(config, out)
    for step in document["steps"]:
        print(
            f"{step['step']:<20} {step['precision']}: {step['seconds']:7.1f} s, "
            f"peak {step['peak_memory_mib']:8.0f} MiB"
        )
    for row in document["parity"]:
        mark = "ok " if row["agrees"] else "OFF"
        print(
            f"{mark} {row['step']:<20} {row['value']:<18} fp32 {row['fp32']:.5g}  "
            f"bf16 {row['bf16']:.5g}  rel {row['rel_diff']:.2%}"
        )
    print(f"wrote {out / 'full_size_check.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
