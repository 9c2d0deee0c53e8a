"""MAML-style warm start: Reptile over (regime, λ, student depth) tasks; writes the meta-policy.

Uses the run's Phase-1 teacher (trained first if absent) for every task, and writes the
meta-weights to --meta-out (default <out>/checkpoints/meta_policy.pt) plus <out>/meta_train.json
(the sampled tasks and their adaptation curves). Point ``meta.warm_start`` at the weights file to
warm-start Phase 2.
"""

from __future__ import annotations

from pathlib import Path

from experiments.cli import check_out_dir, config_argument_parser, config_from_args, run_cli
from policies.reptile import MetaResult, meta_train, task_distribution, task_env_config
from rlpkd.config import Config
from rlpkd.data.build import build_datasets
from rlpkd.errors import UserError
from rlpkd.rundir import RunDirectory, run_lock, write_json
from rlpkd.runtime import configure_runtime
from rlpkd.training.teacher_phase import check_teacher_checkpoint, load_or_train_teacher


def main() -> int:
    parser = config_argument_parser(__doc__, debug_out="runs/debug-meta-train")
    parser.add_argument(
        "--meta-out",
        type=Path,
        default=None,
        help="meta-policy weights file (default <out>/checkpoints/meta_policy.pt)",
    )
    args = parser.parse_args()
    config = config_from_args(args)  # the whole config and inputs, before any write
    if args.meta_out is not None:
        if args.meta_out.is_dir():
            raise UserError(f"--meta-out {args.meta_out} is a directory; give a file path")
        check_out_dir(args.meta_out.parent)
    with run_lock(config.runtime.out):
        result = _meta_train(config, args.meta_out)
    print(f"meta-policy = {result.checkpoint}  ({len(result.curves)} Reptile steps)")
    return 0


def _meta_train(config: Config, meta_out: Path | None) -> MetaResult:
    device = configure_runtime(config.runtime)
    progress = config.runtime.progress
    datasets = build_datasets(config.data, progress)
    run_dir = RunDirectory(config.runtime.out)
    check_teacher_checkpoint(run_dir.checkpoints / "teacher.pt")  # before any write
    run_dir.prepare(config)
    load_or_train_teacher(config, datasets, device, run_dir, progress)
    teacher_path = run_dir.checkpoints / "teacher.pt"
    meta_out = meta_out or run_dir.checkpoints / "meta_policy.pt"
    meta = config.meta
    result = meta_train(
        config,
        lambda task: task_env_config(
            config, task, teacher_path, run_dir.checkpoints / "snapshots", config.runtime.seed
        ),
        task_distribution(meta),
        meta.meta_iterations,
        meta.inner_iterations,
        meta.meta_lr,
        meta_out,
        progress,
        seed=config.runtime.seed,
    )
    write_json(run_dir.path / "meta_train.json", result.summary())
    return result


if __name__ == "__main__":
    run_cli(main)
