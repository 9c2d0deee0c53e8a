"""Did Phase 2 learn? A verdict from the policy's own statistics and its held-out score.

A policy that learnt nothing still has a greedy argmax: tiny logit differences of a near-uniform
network pick one subset for every sample. Reporting that as "the policy's choice" presents noise
as a finding. The verdict therefore comes first in every report and reads:

- **did not learn** when the policy's entropy is at least ``UNTRAINED_ENTROPY_SHARE`` of ln 16
  (near uniform), or when its held-out score is not above the best static subset's (the 95%
  bootstrap interval of the difference reaches 0): it learnt nothing a static choice does not
  give. What Phase 3 then distils is named for what it is, never "the policy's choice".
- **learnt a per-sample choice** otherwise, with the score against the static subset and the
  supervised predictor (the observation's ceiling) and how per-sample the choices are.

Where the predictor is not above the static subset either, the observation shows no per-sample
structure, and the verdict says that a static (or near-uniform) policy is the right answer there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_ENTROPY",
    "UNTRAINED_ENTROPY_SHARE",
    "NO_STRUCTURE_MARGIN",
    "LEARNT",
    "DID_NOT_LEARN",
    "phase2_verdict",
    "phase2_report_lines",
]

MAX_ENTROPY = math.log(16)
"""The entropy of a uniform policy over the 16 subsets (nats)."""
UNTRAINED_ENTROPY_SHARE = 0.95
"""A final entropy at or above this share of ``MAX_ENTROPY`` is an untrained policy."""
NO_STRUCTURE_MARGIN = 0.02
"""A predictor within this much normalised score of the static subset finds no per-sample
structure in the observation."""
LEARNT = "learnt a per-sample choice"
DID_NOT_LEARN = "did not learn"


def _number(summary: Mapping[str, Any], key: str) -> float:
    value = summary.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def phase2_verdict(last: Mapping[str, Any], references: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict on Phase 2 from its last iteration's summary (PPO's ``learner/entropy`` and
    the ``heldout_*`` numbers of ``HeldOutScorer.score``) and the scorer's ``references``.

    Returns ``status`` (``LEARNT`` or ``DID_NOT_LEARN``), ``reasons`` (why not, empty when it
    learnt), ``observation_has_structure`` (predictor above static), the numbers it used and
    ``sentence``: the report's opening paragraph (Markdown).
    """
    entropy = _number(last, "learner/entropy")
    if math.isnan(entropy):
        entropy = _number(last, "heldout_entropy")
    score = _number(last, "heldout_score")
    static = _number(references, "static_score")
    predictor = _number(references, "predictor_score")
    low = _number(last, "heldout_score_minus_static_low")
    high = _number(last, "heldout_score_minus_static_high")
    difference = _number(last, "heldout_score_minus_static")
    share_off = _number(last, "heldout_share_off_most_common")
    agreement = _number(last, "heldout_static_agreement")
    mi, bias = (
        _number(last, "heldout_subset_regime_mi_bits"),
        _number(last, "heldout_subset_regime_mi_bias_bits"),
    )
    static_name = str(references.get("static_subset", "?"))
    entropy_share = entropy / MAX_ENTROPY
    reasons = []
    if not entropy_share < UNTRAINED_ENTROPY_SHARE:
        reasons.append(
            f"its entropy {entropy:.3g} is {100 * entropy_share:.0f}% of ln 16 = "
            f"{MAX_ENTROPY:.3g} (near uniform)"
        )
    if not low > 0:
        reasons.append(
            f"its held-out score {score:.3f} is not above the best static subset's "
            f"{static:.3f} ({static_name}): difference {difference:+.3f}, 95% CI "
            f"[{low:+.3f}, {high:+.3f}]"
        )
    structure = predictor > static + NO_STRUCTURE_MARGIN
    status = DID_NOT_LEARN if reasons else LEARNT
    numbers = {
        "entropy": entropy,
        "entropy_share_of_max": entropy_share,
        "heldout_score": score,
        "static_score": static,
        "static_subset": static_name,
        "predictor_score": predictor,
        "score_minus_static": difference,
        "score_minus_static_ci": [low, high],
        "share_off_most_common": share_off,
        "static_agreement": agreement,
        "most_common_subset": str(last.get("heldout_most_common_subset", "?")),
        "subset_regime_mi_bits": mi,
        "subset_regime_mi_bias_bits": bias,
        "per_context_score": _number(last, "heldout_per_context_score"),
        "static_per_context_score": _number(references, "static_per_context_score"),
        "predictor_per_context_score": _number(references, "predictor_per_context_score"),
    }
    return {
        "status": status,
        "reasons": reasons,
        "observation_has_structure": bool(structure),
        **numbers,
        "sentence": _verdict_sentence(status, reasons, structure, numbers),
    }


def _verdict_sentence(
    status: str, reasons: list[str], structure: bool, numbers: Mapping[str, Any]
) -> str:
    """The verdict as the report's opening paragraph (Markdown)."""
    n = numbers
    per_sample = (
        f"its greedy subset differs from its most common one ({n['most_common_subset']}) on "
        f"{100 * n['share_off_most_common']:.1f}% of held-out contexts"
    )
    if not math.isnan(n["subset_regime_mi_bits"]):
        per_sample += (
            f"; I(subset; regime) = {n['subset_regime_mi_bits']:.3f} bits (plug-in bias "
            f"{n['subset_regime_mi_bias_bits']:.3f})"
        )
    typical = n["per_context_score"] > n["static_per_context_score"] + NO_STRUCTURE_MARGIN
    if structure:
        ceiling_end = "."
    elif typical:
        ceiling_end = ", no more than the static subset by this measure."
    else:
        ceiling_end = (
            ", no more than the static subset: the observation shows no per-sample structure "
            "to learn, so a static choice is the right answer here."
        )
    ceiling = (
        "The supervised predictor of the values from the observation (the observation's "
        f"ceiling) scores {n['predictor_score']:.3f}{ceiling_end}"
    )
    per_context = ""
    if typical:
        per_context = (
            f" By the per-context score, where every context weighs the same, the policy "
            f"({n['per_context_score']:.3f}) and the predictor "
            f"({n['predictor_per_context_score']:.3f}) are above the static subset "
            f"({n['static_per_context_score']:.3f}): the observation does tell typical contexts "
            "apart, and what that gains is lost on the few contexts with the largest values "
            "(the value signal is heavy-tailed)."
        )
    if status == DID_NOT_LEARN:
        return (
            f"**Phase 2 did not learn a per-sample choice**: {'; '.join(reasons)}. "
            f"Its greedy subset equals the best static subset ({n['static_subset']}) on "
            f"{100 * n['static_agreement']:.1f}% of held-out contexts; {per_sample}. Phase 3's "
            "`rl-policy` student follows that greedy argmax: choices no better on held-out "
            f"contexts than the static subset's, not a learnt per-sample choice. {ceiling}"
            f"{per_context}"
        )
    low, high = n["score_minus_static_ci"]
    return (
        f"**Phase 2 learnt a per-sample choice**: held-out normalised score "
        f"{n['heldout_score']:.3f} (random 0, oracle 1) against {n['static_score']:.3f} for the "
        f"best static subset ({n['static_subset']}), difference {n['score_minus_static']:+.3f} "
        f"(95% CI [{low:+.3f}, {high:+.3f}]); entropy {n['entropy']:.3g} "
        f"({100 * n['entropy_share_of_max']:.0f}% of ln 16); {per_sample}. {ceiling}"
        f"{per_context}"
    )


def phase2_report_lines(learning: Mapping[str, Any]) -> list[str]:
    """The report's opening section (Markdown lines) from Phase 2's learning record: the
    verdict, the held-out scores side by side and what PPO learnt from."""
    verdict = learning["verdict"]
    references = learning.get("heldout", {})
    bank = learning.get("decision_bank", {})
    lines = ["## Did Phase 2 learn?", "", verdict["sentence"], ""]
    selected = learning.get("selected", {})

    def cell(value: Any) -> str:
        number = _number({"v": value}, "v")
        return "n/a" if math.isnan(number) else f"{number:.3f}"

    lines += [
        "| held-out contexts | normalised score | per-context score |",
        "|---|---|---|",
        "| uniformly random subset | 0 | 0 |",
        f"| best static subset ({verdict['static_subset']}, chosen on training contexts) | "
        f"{cell(verdict['static_score'])} | {cell(references.get('static_per_context_score'))} |",
        f"| predictor of the values from the observation | {cell(verdict['predictor_score'])} | "
        f"{cell(references.get('predictor_per_context_score'))} |",
        f"| policy (greedy) | {cell(verdict['heldout_score'])} | "
        f"{cell(selected.get('heldout_per_context_score'))} |",
        "| oracle (each context's best subset) | 1 | 1 |",
        "",
        "Normalised score: (mean reward of the choices − random's) / (oracle's − random's), the "
        "measure of the verdict. Per-context score: the mean of each context's own normalised "
        "score, every context weighing the same (the values are heavy-tailed; "
        "docs/decision_process.md).",
        "",
    ]
    if bank:
        lines.append(
            f"PPO ({learning.get('learner', '?')} learner) made {learning.get('ppo_decisions', 0):,.0f}"
            f" decisions in {len(learning.get('history', []))} iterations; the policy is iteration "
            f"{learning.get('selected_iteration', '?')}, the best on "
            f"{bank.get('validation_contexts', 0):,} validation contexts (early stopping; the "
            "held-out ones only measure). "
            f"The decision bank holds {bank.get('contexts', 0):,} contexts of "
            f"{bank.get('images', 0)} images, {references.get('heldout_contexts', 0):,} of them "
            f"(from {bank.get('heldout_images', 0)} images) held out; "
            f"{learning.get('decisions_per_value_gflop', math.nan):.3g} decisions per "
            f"value-signal GFLOP. Final entropy {verdict['entropy']:.3g} of ln 16 = "
            f"{MAX_ENTROPY:.3g}."
        )
        lines.append("")
    return lines
