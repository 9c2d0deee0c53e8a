"""Rebuild the comparison report of a finished or partial sweep (report.md/json, results.csv, Pareto plot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cli import run_cli
from rlpkd.errors import UserError
from rlpkd.report.comparison import build_sweep_report, comparison_table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep", type=Path, required=True, help="sweep directory (with trials/)")
    parser.add_argument(
        "--lam", type=float, default=None, help="FLOPs penalty of the score (default: search.lam)"
    )
    args = parser.parse_args()
    if not args.sweep.is_dir():
        raise UserError(f"no sweep directory at {args.sweep}; pass the --out of scripts/sweep.py")
    report = build_sweep_report(args.sweep, args.lam)
    print(comparison_table(report["methods"], report["summary"]["lam"]))
    print()
    for name, path in report["paths"].items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
