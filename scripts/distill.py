"""Distil a student at fixed levels (or random per-sample subsets) and evaluate it.

--levels none | all | P2,P4 | random:FRACTION | scale-rule  (FRACTION of all-level KD FLOPs, in
expectation; scale-rule: the levels each sample's boxes are assigned to)
The teacher comes from --teacher, else <out>/checkpoints/teacher.pt (trained first if missing).
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import config_argument_parser, config_from_args, run_cli
from rlpkd.config import Config
from rlpkd.data.build import build_datasets
from rlpkd.errors import UserError
from rlpkd.flops.kd_flops import flops_model_from_config
from rlpkd.rundir import RunDirectory, run_lock
from rlpkd.runtime import configure_runtime
from rlpkd.training.level_selection import parse_level_spec
from rlpkd.training.student_phase import StudentRunInputs, run_student, selector_from_spec
from rlpkd.training.teacher_phase import (
    check_teacher_checkpoint,
    load_or_train_teacher,
    load_teacher,
)


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-distill")
    parser.add_argument("--levels", default=None, help="level set (default: distill.levels)")
    parser.add_argument("--seed", type=int, default=None, help="student seed (runtime.seed)")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint")
    args = parser.parse_args()
    teacher_file = [(args.teacher, "--teacher checkpoint")] if args.teacher is not None else []
    config = config_from_args(args, teacher_file)  # the whole config and inputs, before any write
    levels = args.levels if args.levels is not None else config.distill.levels
    try:
        parse_level_spec(levels)  # fail on a bad spec before anything runs
    except UserError as error:
        raise UserError(f"--levels: {error}") from None
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed {args.seed}: a seed must be >= 0")
    seed = config.runtime.seed if args.seed is None else args.seed
    with run_lock(config.runtime.out):
        metrics = _distill(config, args.teacher, levels, seed)
    print(
        f"student levels={levels} seed={seed}: AP = {100 * metrics['AP']:.1f}, "
        f"kd_gflops/image = {metrics['kd_gflops']:.3f} ({config.runtime.out}/metrics.json)"
    )
    return 0


def _distill(config: Config, teacher_path: Path | None, levels: str, seed: int) -> dict:
    device = configure_runtime(config.runtime)
    datasets = build_datasets(config.data, config.runtime.progress)
    run_dir = RunDirectory(config.runtime.out)
    if teacher_path is not None:
        teacher, _ = load_teacher(teacher_path, config, datasets.num_classes)
        teacher = teacher.to(device)
    else:
        check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")  # before any write
        run_dir.prepare(config, write_config=False)  # run_student writes it with the metrics
        teacher, _ = load_or_train_teacher(
            config, datasets, device, run_dir, config.runtime.progress
        )
    flops = flops_model_from_config(config, datasets.num_classes)
    selector = selector_from_spec(levels, flops, seed, config.data.level_thresholds)
    inputs = StudentRunInputs(config, datasets, teacher, flops, device)
    return run_student(inputs, selector, seed, run_dir)


if __name__ == "__main__":
    run_cli(main)
