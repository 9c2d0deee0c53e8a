"""Draw the layer-selection heatmaps of a run from its decision log (<run>/decisions.jsonl)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.cli import run_cli
from rlpkd.errors import UserError
from rlpkd.report.decision_log import read_decisions
from rlpkd.viz.heatmaps import write_heatmaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="run directory")
    args = parser.parse_args()
    log = args.run / "decisions.jsonl"
    if not log.is_file():
        raise UserError(f"no decision log at {log}; it is written by policy-guided distillation")
    decisions = read_decisions(log)
    class_names = sorted({name for record in decisions for name in record["classes"]})
    counts = write_heatmaps(decisions, class_names, args.run / "plots")
    (args.run / "plots" / "selection_counts.json").write_text(json.dumps(counts, indent=2))
    print(f"{len(decisions)} decisions -> {args.run / 'plots'}/selection_by_*.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
