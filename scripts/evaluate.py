"""Evaluate a teacher.pt / student.pt checkpoint with pycocotools COCOeval.

The checkpoint's architecture comes from the config (--config, or the config.yaml next to the
checkpoint's run directory); --role says whether it is the config's teacher or student. With
--debug and no --checkpoint it evaluates the debug config's teacher (trained first if its run
directory has none) into runs/debug-evaluate.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments.cli import (
    check_input_file,
    checked_config,
    config_argument_parser,
    config_from_args,
    run_cli,
)
from experiments.run_setup import open_run, prepare_run
from rlpkd.config import Config
from rlpkd.data.build import build_datasets
from rlpkd.errors import UserError
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.rundir import RunDirectory, run_lock
from rlpkd.runtime import configure_runtime
from rlpkd.training.checkpoints import load_detector_checkpoint

DEBUG_OUT = Path("runs/debug-evaluate")


def main() -> int:
    parser = config_argument_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, default=None, help="teacher.pt or student.pt")
    parser.add_argument("--role", choices=["teacher", "student"], default=None)
    args = parser.parse_args()
    if args.debug and args.checkpoint is None:
        args.checkpoint = _debug_teacher(args)
        args.out = args.out or DEBUG_OUT
    if args.checkpoint is None:
        raise UserError("--checkpoint is required (or --debug): the teacher.pt or student.pt")
    if args.out is None:
        raise UserError("--out is required: the run directory to write metrics.json into")
    check_input_file(args.checkpoint, "--checkpoint")  # before looking for its config.yaml
    config_path = args.config or args.checkpoint.resolve().parent.parent / "config.yaml"
    overrides = [*args.overrides, f"runtime.out={args.out}"]
    config = checked_config(config_path, overrides, [(args.checkpoint, "--checkpoint")])
    role = args.role or ("teacher" if args.checkpoint.name.startswith("teacher") else "student")
    with run_lock(config.runtime.out):
        metrics = _evaluate(config, args.checkpoint, role)
    print(" ".join(f"{k}={100 * v:.1f}" for k, v in metrics.items()))
    return 0


def _debug_teacher(args: argparse.Namespace) -> Path:
    """The debug config's teacher checkpoint, trained (or reused) in its run directory."""
    config = config_from_args(args)
    with run_lock(config.runtime.out):
        opened = open_run(config)
        prepare_run(config, opened)
    return opened.run_dir.checkpoints / "teacher.pt"


def _evaluate(config: Config, checkpoint: Path, role: str) -> dict[str, float]:
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, config.runtime.progress)
    model = load_detector_checkpoint(checkpoint, config, role, datasets.num_classes)
    start = time.perf_counter()
    metrics, predictions = evaluate_detector(
        model.to(device), datasets.val, config.eval, device, config.runtime.amp
    )
    run_dir = RunDirectory(config.runtime.out).prepare(config)
    run_dir.write_predictions(predictions)
    run_dir.write_metrics(
        {
            **metrics,
            "checkpoint": str(checkpoint),
            "role": role,
            "wall_time_s": time.perf_counter() - start,
        }
    )
    return metrics


if __name__ == "__main__":
    run_cli(main)
