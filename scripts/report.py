"""Rebuild the comparison report of a finished or partial sweep (report.md/json, results.csv, Pareto plot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cli import add_path_or_debug, path_or_debug, run_cli
from rlpkd.errors import UserError
from rlpkd.report.comparison import build_sweep_report, comparison_table

DEBUG_SWEEP = Path("runs/debug-sweep")
"""Where ``scripts/sweep.py --debug`` writes."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_path_or_debug(
        parser, "--sweep", "sweep directory (with trials/)", DEBUG_SWEEP, "scripts/sweep.py --debug"
    )
    parser.add_argument(
        "--lam", type=float, default=None, help="FLOPs penalty of the score (default: search.lam)"
    )
    args = parser.parse_args()
    args.sweep = path_or_debug(parser, args, "--sweep", DEBUG_SWEEP)
    if not args.sweep.is_dir():
        made_by = "scripts/sweep.py --debug" if args.debug else "pass the --out of scripts/sweep.py"
        raise UserError(f"no sweep directory at {args.sweep}; {made_by}")
    report = build_sweep_report(args.sweep, args.lam)
    print(comparison_table(report["methods"], report["summary"]["lam"]))
    print()
    for name, path in report["paths"].items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
