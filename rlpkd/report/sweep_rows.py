"""The sweep report's rows and its summary: one row per method, and the static front.

``comparison_rows`` groups the finished trials (``rlpkd.report.sweep_layout.collect_trials``) into
one row per (kind, method), mean ± std over seeds, with each row's ``status`` from the failed
trials; an RL trial's controls get rows of their own (kind ``CONTROL_KIND``).
``comparison_summary`` finds the best static subset, whether each NAS method found it, the static
Pareto front and each RL row against that front.

The static score of a subset S is ``AP(S) - lam * kd_gflops(S) / kd_gflops(all)``, the objective
every search method optimises (``search.lam``); with lam = 0 it is the AP.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rlpkd.errors import ConfigError
from rlpkd.levels import format_levels, parse_levels
from rlpkd.report.sweep_layout import TRIAL_KINDS
from rlpkd.report.tables import REPORT_METRICS, mean_std, summarise_methods
from rlpkd.report.verification import at_or_below_flops
from rlpkd.viz.pareto import CONTROL_KIND as PARETO_CONTROL_KIND

__all__ = [
    "KINDS",
    "CONTROL_KIND",
    "control_method",
    "rl_control_trials",
    "SEARCH_COST_METRICS",
    "STATUS_FINISHED",
    "STATUS_PARTLY_FAILED",
    "STATUS_FAILED",
    "comparison_rows",
    "static_front",
    "comparison_summary",
]

CONTROL_KIND = PARETO_CONTROL_KIND
"""The rows of the controls that an RL trial trains beside its policy (``controls`` in its metrics:
{name: metrics with ``control``, ``control_kind``, ``description``}, as ``experiments.controls``
writes them). The report knows no control by name: it reads them from the trials."""
KINDS: tuple[str, ...] = ("rl", CONTROL_KIND, "nas", "baseline", "static")
"""Row kinds: the trial kinds and the RL trials' controls (beside their RL rows)."""
RL_KINDS = ("rl", CONTROL_KIND)
SEARCH_COST_METRICS: tuple[str, ...] = (
    "search_wall_time_s",
    "search_kd_gflops",
    "search_evaluations",
)
"""Search cost fields of NAS trials (mean ± std over seeds in the rows)."""
NAS_ORDER: tuple[str, ...] = ("darts", "gdas", "evolution", "random", "exhaustive")
STATUS_FINISHED = "finished"
STATUS_PARTLY_FAILED = "partly failed"
STATUS_FAILED = "failed"
"""A row's ``status``: every seed finished, some seeds failed, or no seed finished."""


# ---------------------------------------------------------------------------------------------
# Rows: one per method


def _levels_name(value: Any) -> str:
    """A subset name in canonical form ('P3,P2' -> 'P2,P3'); other specs are kept as they are."""
    try:
        return format_levels(parse_levels(value))
    except (ConfigError, TypeError, AttributeError):
        return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _kd_normaliser(rows: list[dict[str, Any]]) -> float:
    """kd_gflops of the static 'all' row (NaN when it has not finished)."""
    for row in rows:
        if row["kind"] == "static" and row["method"] == "all" and row.get("n", 1) > 0:
            return row["kd_gflops_mean"]
    return math.nan


def _score(ap: float, kd_gflops: float, lam: float, normaliser: float) -> float:
    if lam == 0.0:
        return ap
    if not (_finite(normaliser) and normaliser > 0):
        return math.nan
    return ap - lam * kd_gflops / normaliser


def _nas_extras(members: list[dict[str, Any]]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for metric in SEARCH_COST_METRICS:
        mean, std = mean_std([trial.get(metric) for trial in members])
        extras[f"{metric}_mean"], extras[f"{metric}_std"] = mean, std
    extras["search_devices"] = sorted(
        {str(t["search_device"]) for t in members if "search_device" in t}
    )
    extras["picks"] = {int(t["seed"]): _levels_name(t.get("levels")) for t in members}
    return extras


def control_method(rl_method: str, control: str) -> str:
    """The row method of RL method ``rl_method``'s control ``control``: '<RL method> <control>'."""
    return f"{rl_method} {control}"


def _trial_controls(trial: dict[str, Any]) -> dict[str, dict[str, Any]]:
    controls = trial.get("controls")
    return controls if isinstance(controls, dict) else {}


def rl_control_trials(trials: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per control of each finished RL trial: the control's metrics as a trial of kind
    ``CONTROL_KIND`` (method '<RL method> <name>', same seed and λ; its own
    ``subset_regime_mi_bits`` where its decisions were logged)."""
    records = []
    for trial in trials:
        if trial["kind"] != "rl":
            continue
        for name, control in _trial_controls(trial).items():
            if not isinstance(control, dict):
                continue
            records.append(
                {
                    **control,
                    "kind": CONTROL_KIND,
                    "control": name,
                    "method": control_method(trial["method"], name),
                    "seed": trial["seed"],
                    "lam": trial.get("lam"),
                    "trial_id": trial.get("trial_id"),
                }
            )
    return records


def _control_names(members: list[dict[str, Any]]) -> list[str]:
    """The controls the RL trials ``members`` trained, in their first appearance's order."""
    return list(dict.fromkeys(name for t in members for name in _trial_controls(t)))


def _rl_extras(members: list[dict[str, Any]]) -> dict[str, Any]:
    """λ, each seed's (AP, kd_gflops) (``seed_points``: seeds of one λ may land on very different
    costs), the mutual information I(subset; regime), for RL rows with controls the AP over
    each control paired by seed (``minus_<name>_AP_mean/std/seeds``: mean ± std over seeds of
    the per-seed difference), and for a control's row its name, kind and description."""
    extras: dict[str, Any] = {"lam": mean_std([t.get("lam") for t in members])[0]}
    extras["seed_points"] = [
        {"seed": int(t["seed"]), "AP": t["AP"], "kd_gflops": t["kd_gflops"]}
        for t in sorted(members, key=lambda t: int(t["seed"]))
        if _finite(t.get("AP")) and _finite(t.get("kd_gflops"))
    ]
    mean, std = mean_std([t.get("subset_regime_mi_bits") for t in members])
    extras["subset_regime_mi_bits_mean"], extras["subset_regime_mi_bits_std"] = mean, std
    for key in ("control", "control_kind", "description"):
        if key in members[0]:
            extras[key] = members[0][key]
    controls = []
    for name in _control_names(members):
        differences = [
            t["AP"] - t["controls"][name]["AP"]
            for t in members
            if isinstance(_trial_controls(t).get(name), dict)
            and _finite(t.get("AP"))
            and _finite(t["controls"][name].get("AP"))
        ]
        if differences:
            mean, std = mean_std(differences)
            extras[f"minus_{name}_AP_mean"], extras[f"minus_{name}_AP_std"] = mean, std
            extras[f"minus_{name}_seeds"] = len(differences)
            controls.append(name)
    if controls:
        extras["controls"] = controls
    return extras


def _kind_rows(kind: str, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trial in members:
        by_method[str(trial["method"])].append(trial)
    rows = []
    for row in summarise_methods(members):
        method_trials = by_method[row["method"]]
        row["kind"] = kind
        if kind in RL_KINDS:
            row.update(_rl_extras(method_trials))
        if kind == "nas":
            row.update(_nas_extras(method_trials))
        rows.append(row)
    return rows


def _sort_key(row: dict[str, Any]) -> tuple:
    kind, method = row["kind"], row["method"]
    if kind in RL_KINDS:
        lam = row.get("lam", math.nan)
        return (0, not _finite(lam), lam if _finite(lam) else 0.0, method)
    if kind == "nas":
        rank = NAS_ORDER.index(method) if method in NAS_ORDER else len(NAS_ORDER)
        return (1, rank, 0.0, method)
    if kind == "baseline":
        return (2, False, 0.0, method)
    kd = row["kd_gflops_mean"]
    return (3, not _finite(kd), kd if _finite(kd) else 0.0, method)


def _add_search_cost_fractions(rows: list[dict[str, Any]]) -> None:
    exhaustive = next((r for r in rows if r["kind"] == "nas" and r["method"] == "exhaustive"), None)
    for row in rows:
        if row["kind"] != "nas":
            continue
        for metric, key in (
            ("search_wall_time_s", "search_cost_fraction"),
            ("search_kd_gflops", "search_kd_gflops_fraction"),
        ):
            denominator = exhaustive[f"{metric}_mean"] if exhaustive else math.nan
            numerator = row[f"{metric}_mean"]
            ok = _finite(denominator) and denominator > 0 and _finite(numerator)
            row[key] = numerator / denominator if ok else math.nan


def _failed_row(kind: str, method: str, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of a method none of whose seeds finished: every metric NaN (n/a), n = 0."""
    row: dict[str, Any] = {"method": method, "seeds": [], "n": 0, "kind": kind}
    for metric in REPORT_METRICS:
        row[f"{metric}_mean"], row[f"{metric}_std"] = math.nan, math.nan
    if kind == "rl":
        row["lam"] = mean_std([f.get("lam") for f in failures])[0]
    if kind == "nas":
        row.update(_nas_extras([]))
    return row


def _add_status(rows: list[dict[str, Any]], failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row ``status`` and ``failed_seeds``; add rows for methods that only failed."""
    failures: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for failure in failed:
        failures[(str(failure["kind"]), str(failure["method"]))].append(failure)
    by_key = {(row["kind"], row["method"]): row for row in rows}
    for key, members in failures.items():
        if key not in by_key:
            by_key[key] = _failed_row(*key, members)
            rows.append(by_key[key])
    for key, row in by_key.items():
        row["failed_seeds"] = sorted(int(f["seed"]) for f in failures.get(key, []))
        if not row["failed_seeds"]:
            row["status"] = STATUS_FINISHED
        else:
            row["status"] = STATUS_PARTLY_FAILED if row["n"] else STATUS_FAILED
    return rows


def comparison_rows(
    trials: list[dict[str, Any]], lam: float = 0.0, failed: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per (kind, method): mean ± std over seeds of REPORT_METRICS plus kind extras.

    Every row has ``kind``, ``score`` (AP - lam * kd_gflops / kd_gflops(all), from the means),
    ``status`` ('finished', 'partly failed', 'failed') and ``failed_seeds``; rl rows ``lam``,
    ``subset_regime_mi_bits_mean/std`` and, with controls, ``minus_<control>_AP_mean/std`` (each
    RL row is followed by its controls' rows, kind ``CONTROL_KIND``);
    nas rows the search cost means/stds, ``search_devices``, ``picks`` {seed: subset} and
    ``search_cost_fraction`` / ``search_kd_gflops_fraction`` (relative to the 'exhaustive' row;
    NaN without one). Order: rl by λ, nas, baselines, static by kd_gflops.

    Args:
        trials: the finished trials (``collect_trials``): the only ones in the means.
        lam: the static score's FLOPs price.
        failed: the failed trials (``collect_failed_trials``): they only set the status, and a
            method with no finished seed gets a row of NaN (n = 0, score NaN).
    """
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trial in [*trials, *rl_control_trials(trials)]:
        by_kind[trial["kind"]].append(trial)
    rows = [row for kind in KINDS for row in _kind_rows(kind, by_kind.get(kind, []))]
    rows = _add_status(rows, list(failed or []))
    rows.sort(key=_sort_key)
    _add_search_cost_fractions(rows)
    normaliser = _kd_normaliser(rows)
    for row in rows:
        row["score"] = _score(row["AP_mean"], row["kd_gflops_mean"], lam, normaliser)
    return rows


# ---------------------------------------------------------------------------------------------
# Summary: best static subset, what NAS found, the static front, RL vs that front


def _static_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == "static" and r["n"] > 0]


def _point(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "AP_mean": row["AP_mean"],
        "AP_std": row["AP_std"],
        "kd_gflops_mean": row["kd_gflops_mean"],
        "score": row.get("score", math.nan),  # a sweep's rows have one, a study's not
        "seeds": row["seeds"],
    }


def _best_static(static: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The static row with the best score (ties: cheaper, then by name), and its margin."""
    scored = [r for r in static if _finite(r["score"])]
    if not scored:
        return None
    ranked = sorted(scored, key=lambda r: (-r["score"], r["kd_gflops_mean"], r["method"]))
    best = _point(ranked[0])
    best["runner_up"] = ranked[1]["method"] if len(ranked) > 1 else None
    best["margin_to_runner_up"] = (
        ranked[0]["score"] - ranked[1]["score"] if len(ranked) > 1 else math.nan
    )
    return best


def static_front(static: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pareto-optimal static rows (no other has >= AP and <= kd_gflops, one strictly), by cost."""
    points = [r for r in static if _finite(r["AP_mean"]) and _finite(r["kd_gflops_mean"])]

    def dominated(row: dict[str, Any]) -> bool:
        ap, kd = row["AP_mean"], row["kd_gflops_mean"]
        return any(
            o["AP_mean"] >= ap
            and o["kd_gflops_mean"] <= kd
            and (o["AP_mean"] > ap or o["kd_gflops_mean"] < kd)
            for o in points
        )

    front = [_point(r) for r in points if not dominated(r)]
    return sorted(front, key=lambda p: (p["kd_gflops_mean"], p["method"]))


def _nas_outcome(row: dict[str, Any], best: dict[str, Any] | None, static: list[dict[str, Any]]):
    picks = row.get("picks", {})
    scores = {r["method"]: r["score"] for r in static}
    found = None if best is None or not picks else all(p == best["method"] for p in picks.values())
    pick_scores = [scores.get(p, math.nan) for p in picks.values()]
    regret = (
        best["score"] - sum(pick_scores) / len(pick_scores)
        if best is not None and pick_scores and all(_finite(s) for s in pick_scores)
        else math.nan
    )
    return {
        "found": found,
        "picks": picks,
        "regret": regret,
        "search_cost_fraction": row.get("search_cost_fraction", math.nan),
    }


def _front_point_at(front: list[dict[str, Any]], kd_gflops: float) -> dict[str, Any] | None:
    """The static front's best-AP point at or below ``kd_gflops`` (``at_or_below_flops``, as
    ``train_rl``'s report counts it; None when none is)."""
    if not _finite(kd_gflops):
        return None
    affordable = [p for p in front if at_or_below_flops(p["kd_gflops_mean"], kd_gflops)]
    return max(affordable, key=lambda p: p["AP_mean"]) if affordable else None


def _per_seed_vs_front(row: dict[str, Any], front: list[dict[str, Any]]) -> dict[str, Any]:
    """Each seed of an RL row against the static front at that seed's own kd_gflops, and the
    mean ± std over seeds of the differences (in AP points). Unlike the row's comparison at its
    mean cost, this stays right when the seeds land on very different costs (one seed at no
    KD, the other at most levels). ``per_seed_above`` is None unless every seed has a front
    point at or below its cost."""
    seeds = []
    for point in row.get("seed_points", []):
        reference = _front_point_at(front, point["kd_gflops"])
        seeds.append(
            {
                **point,
                "front_method": reference["method"] if reference else None,
                "diff_points": 100.0 * (point["AP"] - reference["AP_mean"])
                if reference
                else math.nan,
            }
        )
    differences = [s["diff_points"] for s in seeds]
    complete = bool(seeds) and all(_finite(d) for d in differences)
    mean, std = mean_std(differences) if complete else (math.nan, math.nan)
    return {
        "per_seed": seeds,
        "per_seed_diff_points": mean,
        "per_seed_diff_std_points": std,
        "per_seed_above": mean > 0 if complete else None,
    }


def _rl_vs_front(
    row: dict[str, Any],
    front: list[dict[str, Any]],
    shuffled_mi: float = math.nan,
    descriptions: dict[str, str] | None = None,
) -> dict[str, Any]:
    descriptions = descriptions or {}
    kd, ap = row["kd_gflops_mean"], row["AP_mean"]
    reference = _front_point_at(front, kd)
    outcome: dict[str, Any] = {
        "method": row["method"],
        "lam": row.get("lam", math.nan),
        "AP_mean": ap,
        "AP_std": row["AP_std"],
        "kd_gflops_mean": kd,
        "front_method": reference["method"] if reference else None,
        "front_AP": reference["AP_mean"] if reference else math.nan,
        "front_AP_std": reference["AP_std"] if reference else math.nan,
        "controls": [
            {
                "name": name,
                "description": descriptions.get(name, name),
                "points": 100.0 * row[f"minus_{name}_AP_mean"],
                "std_points": 100.0 * row[f"minus_{name}_AP_std"],
                "seeds": row[f"minus_{name}_seeds"],
            }
            for name in row.get("controls", [])
        ],
        "subset_regime_mi_bits": row.get("subset_regime_mi_bits_mean", math.nan),
        "shuffled_subset_regime_mi_bits": shuffled_mi,
        "diff_points": math.nan,
        "diff_std_points": math.nan,
        "above": None,
        **_per_seed_vs_front(row, front),
    }
    if reference is not None and _finite(ap):
        outcome["diff_points"] = 100.0 * (ap - reference["AP_mean"])
        outcome["diff_std_points"] = 100.0 * math.hypot(row["AP_std"], reference["AP_std"])
        outcome["above"] = ap > reference["AP_mean"]
    return outcome


def comparison_summary(
    rows: list[dict[str, Any]], lam: float, failed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Best static subset, whether each NAS method found it, the static front, RL vs the front,
    and the failed trials (``failed``: ``collect_failed_trials``; none of them is in a mean,
    the front or the best static choice: rows with no finished seed are skipped).

    ``nas_found_best_static[m]['found']`` is True when every seed of m picked the best static
    subset (None when there are no static rows to compare with); ``regret`` is the best static
    score minus the mean static score of its picks. ``rl_vs_static_front`` compares each RL row with
    the best static-front AP at kd_gflops <= its own (``diff_points`` in AP points; ``above`` is
    None when no front point is that cheap), and each of its seeds at that seed's own kd_gflops
    (``per_seed``, ``per_seed_diff_points`` ± ``per_seed_diff_std_points``, ``per_seed_above``):
    the verdict to trust when the seeds of one λ land on very different costs.
    """
    static = _static_rows(rows)
    best = _best_static(static)
    front = static_front(static)
    finished = [r for r in rows if r["n"] > 0]
    controls = {r["method"]: r for r in finished if r["kind"] == CONTROL_KIND}
    descriptions = {
        r["control"]: r["description"] for r in controls.values() if r.get("description")
    }

    def control_mi(row: dict[str, Any]) -> float:
        control = controls.get(control_method(row["method"], "shuffled"), {})
        return control.get("subset_regime_mi_bits_mean", math.nan)

    return {
        "lam": lam,
        "kd_gflops_normaliser": _kd_normaliser(rows),
        "n_trials": sum(r["n"] for r in rows if r["kind"] in TRIAL_KINDS),
        "kinds": {kind: sum(r["n"] for r in rows if r["kind"] == kind) for kind in TRIAL_KINDS},
        "best_static": best,
        "nas_found_best_static": {
            r["method"]: _nas_outcome(r, best, static) for r in finished if r["kind"] == "nas"
        },
        "static_front": front,
        "rl_vs_static_front": [
            _rl_vs_front(r, front, control_mi(r), descriptions)
            for r in finished
            if r["kind"] == "rl"
        ],
        "failed_trials": [_failure_summary(f) for f in failed or []],
    }


def _failure_summary(failure: dict[str, Any]) -> dict[str, Any]:
    keys = ("trial_id", "kind", "method", "seed", "error", "phase", "step", "term")
    return {key: failure.get(key) for key in keys}
