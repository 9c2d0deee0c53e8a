"""Phase 1: train the teacher detector and evaluate it (writes checkpoints/teacher.pt)."""

from __future__ import annotations

from experiments.cli import config_argument_parser, config_from_args, run_cli
from rlpkd.data.build import build_datasets
from rlpkd.rundir import RunDirectory, run_lock
from rlpkd.runtime import configure_runtime
from rlpkd.training.teacher_phase import check_teacher_checkpoint, load_or_train_teacher


def main() -> int:
    parser = config_argument_parser(__doc__)
    config = config_from_args(parser.parse_args())  # the whole config, before any write
    with run_lock(config.runtime.out):
        device = configure_runtime(config.runtime)
        datasets = build_datasets(config.data, config.runtime.progress)
        run_dir = RunDirectory(config.runtime.out)
        check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")  # before any write
        run_dir.prepare(config, write_config=False)  # written beside the metrics
        progress = config.runtime.progress
        _, metrics = load_or_train_teacher(config, datasets, device, run_dir, progress)
        run_dir.write_config(config)
        run_dir.write_metrics({**metrics, "role": "teacher"})
    print(f"teacher val AP = {100 * metrics['AP']:.1f}  ({run_dir.path / 'metrics.json'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
