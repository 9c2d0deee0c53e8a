"""The controls a learnt level policy is judged against at a KD budget: one table (issue 19).

Each ``Control`` is one entry of ``BUDGET_CONTROLS``: its name, its kind (what a report groups it
with), a sentence saying what it does, and how to build its level selector at a cost fraction. A
Phase-3 job names a control by a spec, ``control:<name>:<fraction>[:<argument>]``
(``control_spec``), so a worker process builds exactly the selector the driver planned;
``control_selector`` builds it. Every control here spends the policy's measured cost (±2%), the
best static subset at or below it excepted (a static subset costs what it costs).

Adding a control is one entry here. ``train_rl`` and the sweep's RL trials train every entry
next to the policy when ``rl.budget`` is set, and the entries marked ``at_price`` next to a policy
at a fixed price (``rl.budget`` null), always at the policy's measured cost (``control_runs``).
Each student's record carries its control's name, kind and description (``control_record``),
which the reports and the sweep's Pareto plot read: they know no control by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policies.budget_score import static_subsets_around
from policies.policy_selector import PolicyLevels, PolicyScores
from policies.weights import module_from_weights_file
from rlpkd.config import Config
from rlpkd.data.batch import DetectionBatch
from rlpkd.data.build import DetectionDatasets, heldout_split
from rlpkd.data.coco import collate_detection
from rlpkd.errors import ConfigError
from rlpkd.fingerprint import file_digest
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import format_levels, index_to_subset, parse_levels, subset_to_index
from rlpkd.training.budget_selection import (
    BudgetedLevels,
    GapRankedScores,
    LossRankedScores,
    RandomSampleScores,
    RandomSubsetScores,
    StaticPairScores,
    SubsetScorer,
    TemporalLevels,
    ValueGreedyScores,
)
from rlpkd.training.level_selection import FixedLevels, LevelSelector
from rlpkd.training.shuffled_selection import ShuffledMaskLevels

__all__ = [
    "POLICY_METHOD",
    "ControlInputs",
    "Control",
    "BUDGET_CONTROLS",
    "CONTROL_PREFIX",
    "control_spec",
    "parse_control_spec",
    "control_method",
    "control_kind",
    "control_record",
    "controls_beside",
    "control_runs",
    "control_selector",
    "policy_selector",
    "budgeted_policy_selector",
    "static_subsets_around",
    "value_heldout_batch",
]

POLICY_METHOD = "rl-policy"
CONTROL_PREFIX = "control:"


@dataclass(frozen=True)
class ControlInputs:
    """What a control's selector may need: the config, the FLOPs model, the policy's weights
    file, the student's seed and the datasets."""

    config: Config
    flops: FlopsModel
    weights: Path
    seed: int
    datasets: DetectionDatasets


ControlBuilder = Callable[[ControlInputs, float, str], LevelSelector]
"""(inputs, cost fraction, argument) -> the control's level selector."""


@dataclass(frozen=True)
class Control:
    """One control: ``build(inputs, fraction, argument)`` gives its selector at ``fraction`` of
    all-level kd FLOPs; ``argument`` is what the driver fixed for it (e.g. two static subsets).
    ``at_price``: it also trains beside a policy learnt at a fixed price (``rl.budget`` null)."""

    name: str
    kind: str
    description: str
    build: ControlBuilder
    at_price: bool = False


def policy_selector(config: Config, weights: Path, seed: int) -> PolicyLevels:
    """The frozen policy as a ``PolicyLevels`` selector, fingerprinted by its weights file."""
    module = module_from_weights_file(weights)
    digest = file_digest(str(weights))
    return PolicyLevels(
        module,
        config.data.level_thresholds,
        greedy=config.rl.greedy,
        seed=seed,
        name=POLICY_METHOD,
        fingerprint=f"{POLICY_METHOD}:{digest}:greedy={config.rl.greedy}",
    )


def budgeted_policy_selector(
    config: Config, weights: Path, seed: int, flops: FlopsModel, budget: float
) -> BudgetedLevels:
    """The frozen policy spending ``budget`` exactly: each batch's (sample, subset) choices of
    highest log-probability that the batch's allowance pays for."""
    policy = policy_selector(config, weights, seed)
    return BudgetedLevels(
        PolicyScores(policy),
        flops.subset_kd_fractions(),
        budget,
        POLICY_METHOD,
        fingerprint=f"{policy.fingerprint}:budget={budget:.6f}",
        pace=config.rl.budget_pace,
    )


def _budgeted(
    scorer_of: Callable[[ControlInputs, float], SubsetScorer], name: str
) -> ControlBuilder:
    """A builder of ``BudgetedLevels`` over the scorer ``scorer_of`` makes."""

    def build(inputs: ControlInputs, fraction: float, argument: str) -> LevelSelector:
        return BudgetedLevels(
            scorer_of(inputs, fraction),
            inputs.flops.subset_kd_fractions(),
            fraction,
            control_method(name, fraction),
            fingerprint=f"{name}:{fraction:.6f}:seed={inputs.seed}",
            pace=inputs.config.rl.budget_pace,
        )

    return build


def _temporal(early: bool) -> ControlBuilder:
    """A builder of the early (or late) temporal control."""

    def build(inputs: ControlInputs, fraction: float, argument: str) -> LevelSelector:
        schedule = inputs.config.student_schedule
        steps = schedule.epochs * (len(inputs.datasets.train) // schedule.batch_size)
        selector = TemporalLevels(fraction, early, steps * schedule.batch_size)
        selector.name = control_method("early" if early else "late", fraction)
        return selector

    return build


def _shuffled(inputs: ControlInputs, fraction: float, argument: str) -> LevelSelector:
    """The policy's masks permuted across each batch: the budgeted policy's at a budget, the
    policy's own at a fixed price (the same cost as the policy by construction)."""
    if inputs.config.rl.budget is None:
        policy: LevelSelector = policy_selector(inputs.config, inputs.weights, inputs.seed)
    else:
        policy = budgeted_policy_selector(
            inputs.config, inputs.weights, inputs.seed, inputs.flops, fraction
        )
    selector = ShuffledMaskLevels(policy, inputs.seed)
    selector.name = control_method("shuffled", fraction)
    # ":observed": its policy's running gap follows the steps (students from before that fix,
    # whose gap stayed at its start, are not reused)
    selector.fingerprint += ":observed"
    return selector


def _static_pair(argument: str) -> tuple[int, int]:
    low, _, high = argument.partition("/")
    return subset_to_index(parse_levels(low)), subset_to_index(parse_levels(high))


def _static_mix(inputs: ControlInputs, fraction: float, argument: str) -> LevelSelector:
    low, high = _static_pair(argument)
    return BudgetedLevels(
        StaticPairScores(low, high),
        inputs.flops.subset_kd_fractions(),
        fraction,
        control_method("static-mix", fraction),
        fingerprint=f"static-mix:{argument}:{fraction:.6f}",
        pace=inputs.config.rl.budget_pace,
    )


def _best_static(inputs: ControlInputs, fraction: float, argument: str) -> LevelSelector:
    low, _ = _static_pair(argument)
    return FixedLevels(index_to_subset(low))


def value_heldout_batch(config: Config, datasets: DetectionDatasets) -> DetectionBatch:
    """The value signal's fixed batch V, as the env's value reward takes it: the first
    ``rl.heldout_size`` images of ``heldout_split(…, search.holdout_fraction, runtime.seed)``'s
    held-out part. (A Phase-3 student trains on every training image, V's too.)"""
    split = heldout_split(datasets, config.search.holdout_fraction, config.runtime.seed)
    size = min(config.rl.heldout_size, len(split.val))
    return collate_detection([split.val[i] for i in range(size)])


def _value_scores(inputs: ControlInputs, fraction: float) -> ValueGreedyScores:
    return ValueGreedyScores(value_heldout_batch(inputs.config, inputs.datasets))


BUDGET_CONTROLS: dict[str, Control] = {
    control.name: control
    for control in (
        Control(
            "random-samples",
            "random",
            "all levels on a random share of the samples",
            _budgeted(lambda inputs, fraction: RandomSampleScores(inputs.seed), "random-samples"),
        ),
        Control(
            "random-subsets",
            "random",
            "independent per-level coin flips, nudged to the batch's allowance",
            _budgeted(
                lambda inputs, fraction: RandomSubsetScores(
                    inputs.flops.inclusion_prob_for_fraction(fraction), inputs.seed
                ),
                "random-subsets",
            ),
            at_price=True,
        ),
        Control(
            "early", "temporal", "all levels in the first part of the schedule", _temporal(True)
        ),
        Control(
            "late", "temporal", "all levels in the last part of the schedule", _temporal(False)
        ),
        Control(
            "gap-ranked",
            "heuristic",
            "the samples of largest teacher-student feature gap when last distilled",
            _budgeted(lambda inputs, fraction: GapRankedScores(inputs.seed), "gap-ranked"),
        ),
        Control(
            "loss-ranked",
            "heuristic",
            "the samples of highest student detection loss in the step's own forward",
            _budgeted(
                lambda inputs, fraction: LossRankedScores(inputs.config.data.level_thresholds),
                "loss-ranked",
            ),
        ),
        Control(
            "value-greedy",
            "bound",
            "each batch's pairs ranked by value per FLOP from the per-step value signal (an "
            "upper bound: a held-out gradient and a JVP every step)",
            _budgeted(_value_scores, "value-greedy"),
        ),
        Control(
            "shuffled",
            "policy-derived",
            "the policy's masks permuted across each batch",
            _shuffled,
            at_price=True,
        ),
        Control(
            "best-static",
            "static",
            "the static subset of highest bank value at or below the cost (costs what it costs)",
            _best_static,
        ),
        Control(
            "static-mix",
            "static",
            "the best static subsets at or below and above the cost, mixed to hit it",
            _static_mix,
        ),
    )
}


def control_spec(name: str, fraction: float, argument: str = "") -> str:
    """The spec of a Phase-3 job of control ``name`` at ``fraction`` (``parse_control_spec``)."""
    spec = f"{CONTROL_PREFIX}{name}:{fraction:.6f}"
    return f"{spec}:{argument}" if argument else spec


def parse_control_spec(spec: str) -> tuple[Control, float, str]:
    """(control, fraction, argument) of a ``control_spec``.

    Raises:
        ConfigError: not a control spec, an unknown control or a fraction outside [0, 1].
    """
    if not spec.startswith(CONTROL_PREFIX):
        raise ConfigError(f"{spec!r} is not a control spec ({CONTROL_PREFIX}NAME:FRACTION)")
    name, _, rest = spec[len(CONTROL_PREFIX) :].partition(":")
    text, _, argument = rest.partition(":")
    if name not in BUDGET_CONTROLS:
        raise ConfigError(
            f"{spec!r}: unknown control {name!r}; known: {', '.join(BUDGET_CONTROLS)}"
        )
    try:
        fraction = float(text)
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"{spec!r}: the cost must be a fraction in [0, 1]")
    return BUDGET_CONTROLS[name], fraction, argument


def control_method(name: str, fraction: float) -> str:
    """The report's method name of control ``name`` at ``fraction``: 'gap-ranked@0.50'."""
    return f"{name}@{fraction:.2f}"


def _control_of(method: str) -> Control | None:
    """The table entry a method name belongs to ('gap-ranked@0.50', 'best-static:P3'), if any."""
    return BUDGET_CONTROLS.get(method.partition("@")[0].partition(":")[0])


def control_kind(method: str) -> str:
    """The kind of a method name: a control's kind, 'policy', or 'reference' (none, all)."""
    if method == POLICY_METHOD:
        return "policy"
    control = _control_of(method)
    return control.kind if control is not None else "reference"


def control_selector(spec: str, inputs: ControlInputs) -> LevelSelector:
    """The level selector a control spec names, for ``inputs``' seed."""
    control, fraction, argument = parse_control_spec(spec)
    return control.build(inputs, fraction, argument)


def control_record(method: str) -> dict[str, str]:
    """What a control's student record carries so that a report can group and describe it
    without knowing the control: {"control", "control_kind", "description"} (empty for a
    method that is no control of the table)."""
    control = _control_of(method)
    if control is None:
        return {}
    return {
        "control": control.name,
        "control_kind": control.kind,
        "description": control.description,
    }


def controls_beside(config: Config) -> list[Control]:
    """The controls that train beside the policy: every entry with ``rl.budget``, the
    ``at_price`` entries without; of those only the ones ``experiment.controls`` names, if it
    names any (``[]``: none)."""
    at_budget = config.rl.budget is not None
    chosen = config.experiment.controls
    return [
        control
        for control in BUDGET_CONTROLS.values()
        if (at_budget or control.at_price) and (chosen is None or control.name in chosen)
    ]


def control_runs(
    config: Config, fraction: float, static_pair: tuple[int, int]
) -> list[tuple[str, str]]:
    """(method, spec) of every control of ``controls_beside(config)`` at ``fraction``
    (``static_pair``: the subsets of ``static_subsets_around``)."""
    low, high = static_pair
    argument = f"{format_levels(index_to_subset(low))}/{format_levels(index_to_subset(high))}"
    runs = []
    for control in controls_beside(config):
        method = control_method(control.name, fraction)
        if control.name == "best-static":
            method = f"best-static:{format_levels(index_to_subset(low))}"
        runs.append((method, control_spec(control.name, fraction, argument)))
    return runs
