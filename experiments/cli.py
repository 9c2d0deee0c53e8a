"""Shared command-line plumbing: --config/--set/--out/--debug, up-front checks and one-line errors.

Every script calls :func:`config_from_args` (or :func:`checked_config`) before any phase: the whole
config (types, ranges, registry names) and every input it names (COCO files, ``meta.warm_start``,
checkpoints given as arguments) and the run directory itself are checked, so a bad input fails with
one line before anything in ``--out`` is written.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from experiments.validation import validate_config_names
from rlpkd.checkpoint_io import load_checkpoint
from rlpkd.config import Config, load_config
from rlpkd.errors import CheckpointError, ConfigError, DataError, UserError
from rlpkd.models.torchvision_fcos import check_torchvision_fcos_file
from rlpkd.stop_signals import (
    RESUME_HINT,
    RunStopped,
    finish_stop,
    install_stop_handlers,
    stop_message,
)

__all__ = [
    "config_argument_parser",
    "add_path_or_debug",
    "path_or_debug",
    "config_from_args",
    "checked_config",
    "check_out_dir",
    "check_input_file",
    "check_run_inputs",
    "run_cli",
    "DEBUG_CONFIG",
]

DEBUG_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "debug.yaml"

AccessCheck = Callable[[Path, int], bool]
"""``os.access``-like: (path, mode) -> allowed; injectable so tests can deny writes as root."""


def config_argument_parser(
    description: str, debug_out: str | None = None
) -> argparse.ArgumentParser:
    """A parser with the options every script shares; ``debug_out``: the run directory of
    ``--debug`` without ``--out`` (default: debug.yaml's ``runs/debug``, which ``train_rl``
    owns; every other script that writes a run gets its own, so no debug run overwrites
    another's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.set_defaults(debug_out=debug_out)
    parser.add_argument("--config", type=Path, default=None, help="experiment YAML")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set distill.loss=mse (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (runtime.out)")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="use configs/debug.yaml (about a minute end to end), into "
        f"{debug_out or 'runs/debug'} unless --out is given",
    )
    return parser


def add_path_or_debug(
    parser: argparse.ArgumentParser, option: str, help_text: str, debug_path: Path, made_by: str
) -> None:
    """A path option (``option``, e.g. ``--run``) and ``--debug``, which stands for ``option
    debug_path``, the path ``made_by`` writes."""
    parser.add_argument(option, type=Path, default=None, help=help_text)
    parser.add_argument("--debug", action="store_true", help=f"{option} {debug_path} ({made_by})")


def path_or_debug(
    parser: argparse.ArgumentParser, args: argparse.Namespace, option: str, debug_path: Path
) -> Path:
    """``option``'s path, else ``debug_path`` with ``--debug``; argparse's error with neither."""
    path = getattr(args, option.lstrip("-").replace("-", "_"))
    if path is None and not args.debug:
        parser.error(f"the following arguments are required: {option} (or --debug)")
    return path or debug_path


def check_out_dir(out: str | Path, access: AccessCheck = os.access) -> None:
    """Raise ConfigError unless ``out`` is a directory this process can write, or can be created.

    Nothing is created: an existing ``out`` must be a writable directory; a missing one needs its
    nearest existing ancestor to be a writable directory.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, so the run directory cannot exist")
    if not access(existing, os.W_OK | os.X_OK):
        what = "the run directory" if existing == out else f"its parent {existing}"
        raise ConfigError(f"--out {out}: {what} is not writable; choose another --out")


def check_input_file(path: str | Path, what: str, directory: bool = False) -> None:
    """Raise DataError unless ``path`` exists (as a directory if ``directory``) and is readable."""
    path = Path(path)
    if directory:
        if not path.is_dir():
            raise DataError(f"{what} not found: {path} is not a directory")
        try:
            next(os.scandir(path), None)
        except OSError as error:
            raise DataError(f"{what} {path} is not readable ({error.strerror})") from None
        return
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise DataError(f"{what} {path} is not readable ({error.strerror})") from None


def check_run_inputs(
    config: Config,
    input_files: Sequence[tuple[str | Path, str]] = (),
    access: AccessCheck = os.access,
) -> None:
    """Check what a run reads and where it writes before any phase starts.

    Args:
        config: the validated config (``runtime.out``, ``data`` COCO paths, ``meta.warm_start``,
            ``teacher.init``).
        input_files: (path, what) of files given as script arguments (e.g. a --teacher checkpoint).
        access: ``os.access`` (tests inject a stricter one).

    Raises:
        ConfigError, DataError, CheckpointError: one line naming the key or file.
    """
    check_out_dir(config.runtime.out, access)
    data = config.data
    if data.source == "coco":
        check_input_file(data.train_images, "data.train_images (COCO image directory)", True)
        check_input_file(data.train_annotations, "data.train_annotations (COCO annotation JSON)")
        check_input_file(data.val_images, "data.val_images (COCO image directory)", True)
        check_input_file(data.val_annotations, "data.val_annotations (COCO annotation JSON)")
    for path, what in input_files:
        check_input_file(path, what)
    if config.teacher.init:
        check_torchvision_fcos_file(config.teacher, config.teacher.init, "teacher.init")
    if config.meta.warm_start:
        state = load_checkpoint(
            config.meta.warm_start,
            "meta.warm_start (policy weights)",
            required_keys=("state", "hidden_sizes"),
        )
        saved = [int(size) for size in state["hidden_sizes"]]
        if saved != list(config.rl.hidden_sizes):
            raise CheckpointError(
                f"meta.warm_start {config.meta.warm_start} has hidden sizes {saved} but "
                f"rl.hidden_sizes is {list(config.rl.hidden_sizes)}"
            )
        saved_head = str(state.get("policy_head", "joint"))
        if saved_head != config.rl.policy_head:
            raise CheckpointError(
                f"meta.warm_start {config.meta.warm_start} has a {saved_head} policy head but "
                f"rl.policy_head is {config.rl.policy_head!r}"
            )


def checked_config(
    path: str | Path | None,
    overrides: Sequence[str],
    input_files: Sequence[tuple[str | Path, str]] = (),
    check_inputs: bool = True,
) -> Config:
    """Load ``path`` with ``overrides``, validate every value and registry name, and (with
    ``check_inputs``) check the run's inputs and ``runtime.out`` (:func:`check_run_inputs`).
    Nothing is written."""
    config = load_config(path, list(overrides))
    source = "defaults" if path is None else str(path)
    if overrides:
        source = f"{source} with --set overrides"
    validate_config_names(config, source)
    if check_inputs:
        check_run_inputs(config, input_files)
    return config


def config_from_args(
    args: argparse.Namespace,
    input_files: Sequence[tuple[str | Path, str]] = (),
    check_inputs: bool = True,
) -> Config:
    """The validated config the arguments describe (--debug replaces --config); with
    ``check_inputs`` (scripts that run something) also its inputs and ``--out`` (see
    :func:`checked_config`)."""
    path = DEBUG_CONFIG if args.debug else args.config
    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"runtime.out={args.out}")
    elif args.debug and getattr(args, "debug_out", None):
        overrides.append(f"runtime.out={args.debug_out}")
    return checked_config(path, overrides, input_files, check_inputs)


def run_cli(main: Callable[[], int | None], resumable: bool = False) -> None:
    """Run ``main``; a UserError becomes ``error: <message>`` on stderr and exit status 2.

    SIGTERM (a scheduler's time limit or preemption) and Ctrl-C stop the run the same way
    (``rlpkd.stop_signals``): the clean-up runs (run lock, PPO, student workers, the Ray this
    process started), then one line ``stopped by SIGTERM in <phase>`` on stderr, with
    ``resumable`` (scripts with ``--resume``) followed by how to continue, and exit status 143
    (SIGTERM) or 130 (Ctrl-C).
    """
    install_stop_handlers()
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        _exit(2)
    except KeyboardInterrupt as interrupt:
        stop = interrupt if isinstance(interrupt, RunStopped) else RunStopped(signal.SIGINT)
        finish_stop(stop)
        print(stop_message(stop, RESUME_HINT if resumable else None), file=sys.stderr)
        _exit(stop.exit_status)
    _exit(code or 0)


def _exit(status: int) -> NoReturn:
    """``sys.exit(status)`` with every object alive now frozen (``gc.freeze``): the interpreter's
    last garbage collections then skip the millions that importing torch, torchvision and Ray
    made, which took about 1.3 s of every script's exit on 2 cores. ``atexit`` handlers
    (``ray.shutdown``) and the modules' clean-up run as before."""
    gc.freeze()
    sys.exit(status)
