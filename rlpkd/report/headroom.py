"""The headroom report as Markdown: findings first, stated plainly, then the tables behind them.

Input is ``headroom.json`` as written (``experiments.headroom``; NaN became null).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NEAR_ZERO_SHARE", "BEST_STATIC", "ORACLE", "render_headroom_markdown"]

NEAR_ZERO_SHARE = 0.05
"""An interaction share below this is reported as near zero."""
ORACLE = "oracle"
"""The per-image regime-table selector's method name in the report."""
BEST_STATIC = "best static ≤ oracle FLOPs"
"""The method name of the best static subset at no more kd GFLOPs than the oracle."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _ap(value: Any, std: Any = None) -> str:
    """AP fraction -> '12.3' or '12.3 ± 0.4' (in %); 'n/a' when missing."""
    if not _finite(value):
        return "n/a"
    if std is None:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} ± {100 * std:.1f}" if _finite(std) else f"{100 * value:.1f}"


def _signed_ap(value: Any, std: Any = None) -> str:
    if not _finite(value):
        return "n/a"
    return f"{100 * value:+.1f} ± {100 * std:.1f}" if _finite(std) else f"{100 * value:+.1f}"


def _method_ap(method: dict[str, Any], key: str = "AP") -> str:
    """A method's mean AP, with ± std only when it has more than one seed."""
    std = method[f"{key}_std"] if len(method["seeds"]) > 1 else None
    return _ap(method[f"{key}_mean"], std)


def _difference(difference: dict[str, Any]) -> str:
    std = difference["std"] if len(difference["per_seed"]) > 1 else None
    return _signed_ap(difference["mean"], std)


def _share(value: Any) -> str:
    return f"{value:.3f}" if _finite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _interaction_finding(values: dict[str, Any]) -> list[str]:
    pooled = values["pooled"]
    share = pooled["anova"]["interaction_share"]
    per_snapshot = ", ".join(
        f"{_share(s['anova']['interaction_share'])} at snapshot {s['fraction']:g}"
        for s in values["snapshots"]
    )
    regime_part = pooled["regime_x_level"]["share_of_interaction"]
    stage_part = pooled.get("snapshot_x_level", {}).get("share_of_interaction")
    lines = [
        f"- **Sample × level interaction share of the value matrices: {_share(share)}** pooled "
        f"({per_snapshot}). Of the pooled interaction, {_share(regime_part)} is the regime × "
        "level part (what a policy knowing only each image's regime can use) and "
        f"{_share(stage_part)} the snapshot × level part (level preferences that change with the "
        "training stage); the rest varies between images of one regime at one stage."
    ]
    if _finite(regime_part) and regime_part < NEAR_ZERO_SHARE:
        lines.append(
            f"- **The image regimes explain almost none of the interaction (< {NEAR_ZERO_SHARE}):** "
            "images of different regimes do not rank the levels differently on average."
        )
    if _finite(share) and share < NEAR_ZERO_SHARE:
        lines.append(
            f"- **The interaction share is near zero (< {NEAR_ZERO_SHARE}):** the samples rank the "
            "levels almost the same way, so the value signal leaves a per-sample level choice "
            "little to exploit over one static subset."
        )
    return lines


def _comparison_finding(report: dict[str, Any]) -> list[str]:
    comparison = report["comparison"]
    methods = report["methods"]
    oracle = methods[ORACLE]
    seeds = len(oracle["seeds"])
    lines = []
    best = report["best_static_at_oracle_flops"]
    if best is None:
        lines.append(
            "- No trained static subset costs at most the oracle's kd GFLOPs "
            f"({report['oracle_kd_gflops_model']:.3f}): there is no static comparison at its cost."
        )
    else:
        difference = comparison["oracle_minus_best_static"]
        lines.append(
            f"- **Oracle − best static subset at ≤ its kd GFLOPs ({best['levels']}): "
            f"{_difference(difference)} AP** (paired by seed, {seeds} seed(s); oracle "
            f"{_method_ap(oracle)} at {report['oracle_kd_gflops_model']:.3f} kd GFLOPs, "
            f"{best['levels']} {_method_ap(methods[BEST_STATIC])} at "
            f"{best['kd_gflops_model']:.3f})."
        )
        if _finite(difference["mean"]):
            std = difference["std"] if _finite(difference["std"]) else 0.0
            if len(difference["per_seed"]) < 2:
                std = math.inf  # one seed: no spread to compare with
            if difference["mean"] <= 0:
                lines.append(
                    "- **The oracle does not beat the best static subset at its FLOPs** on this "
                    "data: knowing each image's regime buys no AP here."
                )
            elif difference["mean"] <= std:
                lines.append(
                    "- The oracle's gain is not larger than the seeds' standard deviation of the "
                    "paired difference: not distinguishable from seed noise with these seeds."
                )
    all_levels = comparison["oracle_minus_all_levels"]
    lines.append(
        f"- Oracle − all levels: {_difference(all_levels)} AP at "
        f"{report['oracle_kd_gflops_model']:.3f} against "
        f"{report['kd_gflops_by_subset']['P2,P3,P4,P5']:.3f} kd GFLOPs."
    )
    rule = comparison["scale_rule_minus_all_levels"]
    lines.append(
        f"- Scale rule − all levels: {_difference(rule)} AP at "
        f"{methods['scale rule']['kd_gflops_mean']:.3f} kd GFLOPs (measured)."
    )
    return lines


def _best_subsets_finding(report: dict[str, Any]) -> list[str]:
    best = report["best_subset_by_regime"]
    parts = [f"{regime} → {entry['levels']} ({_ap(entry['AP'])})" for regime, entry in best.items()]
    lines = [
        f"- Best static subset per regime (AP on that regime's val images): {'; '.join(parts)}."
    ]
    if len({entry["levels"] for entry in best.values()}) == 1:
        lines.append(
            "- **Every regime has the same best subset**, so the oracle distils one static subset."
        )
    return lines


def _value_section(values: dict[str, Any], regimes: list[str], levels: list[str]) -> list[str]:
    lines = ["## Value matrices", ""]
    header = ["snapshot", "step", "samples", "interaction share"]
    header += [f"within {r}" for r in regimes]
    header += ["regime × level / total", "sample share", "level share"]
    rows = []
    entries = [(f"{s['fraction']:g}", str(s["step"]), s) for s in values["snapshots"]]
    entries.append(("pooled", "", values["pooled"]))
    for name, step, summary in entries:
        row = [
            name,
            step,
            str(summary["num_samples"]),
            _share(summary["anova"]["interaction_share"]),
        ]
        for regime in regimes:
            anova = summary["by_regime"].get(regime, {}).get("anova")
            row.append(_share(anova["interaction_share"]) if anova else "n/a")
        row += [
            _share(summary["regime_x_level"]["share_of_total"]),
            _share(summary["anova"]["sample_share"]),
            _share(summary["anova"]["level_share"]),
        ]
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "",
        "Shares of the total sum of squares of a two-way ANOVA without replication (samples × "
        "levels): interaction = the residual of the additive model; *within r* = the same on the "
        "images of regime r only; *regime × level* = the part of the interaction that the regime "
        "means explain. The pooled matrix stacks the snapshots after dividing each by its own "
        "overall std. With one value per (sample, level) the interaction cannot be told apart "
        "from whatever is idiosyncratic to a sample's value (a first-order estimate against one "
        "held-out batch): it bounds the per-sample structure from above.",
        "",
        "Mean value by regime × level (pooled, in units of each snapshot's std; > 0 predicts a "
        "lower held-out detection loss) and the share of the regime's samples whose best level "
        "it is:",
        "",
    ]
    rows = []
    for regime in regimes:
        entry = values["pooled"]["by_regime"].get(regime)
        if entry is None:
            continue
        cells = [
            f"{mean:+.2f} ({share:.2f})" if _finite(share) else f"{mean:+.2f}"
            for mean, share in zip(entry["mean"], entry["best_level_share"], strict=True)
        ]
        rows.append([regime, str(entry["num_samples"]), *cells])
    lines += _table(["regime", "samples", *levels], rows)
    return lines


def _static_section(report: dict[str, Any], regimes: list[str]) -> list[str]:
    best = {regime: entry["levels"] for regime, entry in report["best_subset_by_regime"].items()}
    lines = [
        "## Static subsets (seed 0)",
        "",
        "Every student is trained on all training images and **scored** on the val images of "
        "each regime. The best subset of a regime is chosen on the same val images it is scored "
        "on, so the oracle built from them is an optimistic upper bound on what a per-regime "
        "choice can gain.",
        "",
    ]
    rows = []
    for run in sorted(report["static_subsets"], key=lambda r: r["kd_gflops_model"]):
        cells = [run["levels"], f"{run['kd_gflops_model']:.3f}", _ap(run["AP"])]
        for regime in regimes:
            text = _ap(run["AP_by_regime"].get(regime))
            cells.append(f"**{text}**" if best.get(regime) == run["levels"] else text)
        rows.append(cells)
    counts = report["val_images_by_regime"]
    header = ["levels", "kd_gflops", "AP", *[f"AP {r} ({counts[r]})" for r in regimes]]
    lines += _table(header, rows)
    return lines


def _comparison_section(report: dict[str, Any], regimes: list[str]) -> list[str]:
    oracle = report["methods"][ORACLE]
    table = ", ".join(f"{r} → {levels}" for r, levels in oracle["table"].items())
    lines = [
        "## Oracle against static subsets",
        "",
        f"The oracle gives each training image its regime's best subset ({table}); its kd GFLOPs "
        f"per image from the FLOPs model, averaged over the training images: "
        f"{report['oracle_kd_gflops_model']:.3f}. The best static subset at ≤ that cost is the "
        "one with the highest overall val AP of the seed-0 students. AP in %, mean ± std over "
        "seeds; kd GFLOPs as counted in training.",
        "",
    ]
    rows = []
    for name, method in report["methods"].items():
        cells = [name, method["levels"], ",".join(map(str, method["seeds"]))]
        cells.append(_method_ap(method))
        for regime in regimes:
            entry = method["AP_by_regime"][regime]
            cells.append(_ap(entry["mean"], entry["std"] if len(method["seeds"]) > 1 else None))
        cells.append(
            f"{method['kd_gflops_mean']:.3f}" if _finite(method["kd_gflops_mean"]) else "n/a"
        )
        rows.append(cells)
    header = ["method", "levels", "seeds", "AP", *[f"AP {r}" for r in regimes], "kd_gflops"]
    lines += _table(header, rows)
    return lines


def render_headroom_markdown(report: dict[str, Any]) -> str:
    """``headroom.md`` from the report dict (``headroom.json``)."""
    regimes = list(report["regimes"])
    levels = ["P2", "P3", "P4", "P5"]
    config = report["config"]
    teacher = report["teacher"]
    lines = [
        "# Headroom of a per-sample level choice",
        "",
        f"Data: {config['num_train']} train / {config['num_val']} val images at "
        f"{config['image_size']} px, regime `{config['data_regime']}` (val images per regime: "
        + ", ".join(f"{r} {n}" for r, n in report["val_images_by_regime"].items())
        + f"). Student schedule: {config['student_epochs']} epoch(s); seeds {config['seeds']}. "
        "Teacher AP "
        f"{_ap(teacher['AP'])} ("
        + ", ".join(f"{r} {_ap(ap)}" for r, ap in teacher["AP_by_regime"].items())
        + ").",
        "",
        "## Findings",
        "",
        *_interaction_finding(report["values"]),
        *_best_subsets_finding(report),
        *_comparison_finding(report),
        "",
        *_value_section(report["values"], regimes, levels),
        "",
        f"Values `v_il` (`rlpkd.distill.level_value`) of {config['value_batches']} batches of "
        f"{config['batch_size']} training images from `heldout_split(…).train` at each snapshot "
        f"{config['snapshot_fractions']} of the all-level snapshot student, against a held-out "
        f"batch V of {config['heldout_size']} images from its `.val` part (holdout fraction "
        f"{config['holdout_fraction']}; never the val split). The snapshot student itself was "
        "trained on the whole training split, V included.",
        "",
        *_static_section(report, regimes),
        "",
        *_comparison_section(report, regimes),
        "",
        "## Wall time",
        "",
        ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["wall_time_s"].items()),
        "",
        "Plots: " + ", ".join(f"`{path}`" for path in report.get("plots", [])),
    ]
    return "\n".join(lines) + "\n"
