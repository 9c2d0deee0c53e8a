"""Draw the layer-selection heatmaps of a run from its decision log (<run>/decisions.jsonl)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.cli import add_path_or_debug, path_or_debug, run_cli
from rlpkd.errors import UserError
from rlpkd.report.decision_log import read_decisions
from rlpkd.viz.heatmaps import write_heatmaps

DEBUG_RUN = Path("runs/debug/students/rl-policy-seed0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_path_or_debug(
        parser, "--run", "run directory", DEBUG_RUN, "the policy student of make debug"
    )
    args = parser.parse_args()
    args.run = path_or_debug(parser, args, "--run", DEBUG_RUN)
    log = args.run / "decisions.jsonl"
    if not log.is_file():
        made_by = (
            "`make debug` (scripts/train_rl.py --debug)"
            if args.debug
            else "policy-guided distillation"
        )
        raise UserError(f"no decision log at {log}; it is written by {made_by}")
    decisions = read_decisions(log)
    class_names = sorted({name for record in decisions for name in record["classes"]})
    counts = write_heatmaps(decisions, class_names, args.run / "plots")
    (args.run / "plots" / "selection_counts.json").write_text(json.dumps(counts, indent=2))
    print(f"{len(decisions)} decisions -> {args.run / 'plots'}/selection_by_*.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
