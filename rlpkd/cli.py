"""Shared command-line plumbing: --config/--set/--out/--debug and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rlpkd.config import Config, load_config
from rlpkd.errors import UserError

__all__ = ["config_argument_parser", "config_from_args", "run_cli", "DEBUG_CONFIG"]

DEBUG_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "debug.yaml"


def config_argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every script shares."""
    parser = argparse.ArgumentParser(description=description)
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
        "--debug", action="store_true", help="use configs/debug.yaml (about a minute end to end)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated config the arguments describe (--debug replaces --config)."""
    path = DEBUG_CONFIG if args.debug else args.config
    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"runtime.out={args.out}")
    return load_config(path, overrides)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main``; a UserError becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
