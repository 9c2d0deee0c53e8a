"""One check of a GPU machine, sized for at most 10 minutes: KD step throughput against the card's
bf16 matmul rate and torchvision's FCOS, bf16 vs fp32 loss parity, and four sweep trials sharing
one GPU against the same four run one at a time (``experiments.gpu_check``). Writes one JSON.

Example: python scripts/gpu_check.py --out runs/gpu_check
Without a GPU it runs at CPU sizes (a test of the check, not a measurement).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from experiments.cli import config_argument_parser, config_from_args, run_cli
from experiments.gpu_check import (
    CPU_SIZES,
    GPU_SIZES,
    check_document,
    dense_matmul_tflops,
    device_facts,
    kd_step_parity,
    kd_step_speed,
    sweep_sharing,
)
from rlpkd.rundir import run_lock, write_json

SWEEP_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep.yaml"
"""The sweep trials' data and models: the CPU sweep's (4-epoch students at 128 px)."""


def main() -> int:
    """Run every part, print one line each, write ``<out>/gpu_check.json``."""
    parser = config_argument_parser(__doc__.splitlines()[0], debug_out="runs/debug-gpu-check")
    parser.add_argument("--skip-sweep", action="store_true", help="leave out the sweep part")
    parser.set_defaults(config=SWEEP_CONFIG)
    args = parser.parse_args()
    if args.out is None and not args.debug:
        args.out = Path("runs/gpu_check")
    config = config_from_args(args)
    out = Path(config.runtime.out)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    sizes = GPU_SIZES if cuda and not args.debug else CPU_SIZES
    with run_lock(out):
        parts = {"device": device_facts(device)}
        matmul = dense_matmul_tflops(device, sizes.matmul_side)
        parts["dense_bf16_matmul_tflops"] = matmul
        print(f"dense bf16 matmul: {matmul:.1f} TFLOP/s")
        speed = kd_step_speed(device, sizes, matmul)
        parts["kd_step_speed"] = speed
        for timing in speed["timings"]:
            print(
                f"{timing['name']}: {timing['images_per_s']:.1f} img/s, "
                f"{timing['achieved_tflops']:.2f} TFLOP/s"
            )
        print(f"ours / matmul rate: {speed['ours_fraction_of_matmul_rate']:.2f} (goal >= 0.4)")
        parts["kd_step_parity"] = kd_step_parity(device, sizes)
        for row in parts["kd_step_parity"]:
            print(f"parity {row['value']}: rel {row['rel_diff']:.2%} agrees={row['agrees']}")
        if not args.skip_sweep:
            sharing = sweep_sharing(config, out / "sweep", cuda, os.cpu_count() or 1)
            parts["sweep_sharing"] = sharing
            print(
                f"sweep shared / serial throughput: {sharing['shared_over_serial']:.2f} (goal >= 2)"
            )
        document = check_document(sizes, parts)
        write_json(out / "gpu_check.json", document)
    print(json.dumps(document["goals"]))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
