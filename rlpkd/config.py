"""Typed experiment config: YAML -> dataclasses with defaults, dotted overrides, clear errors.

A config is data (a ``yaml.SafeLoader`` whose floats follow YAML 1.2: ``1e-3`` is a float). Every field carries a one-line docstring; the resolved
config is written to ``<out>/config.yaml`` so a run is reproducible from that file alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlpkd.errors import ConfigError
from rlpkd.levels import LEVELS

__all__ = [
    "DataConfig",
    "ModelConfig",
    "ScheduleConfig",
    "DistillConfig",
    "EvalConfig",
    "ExperimentConfig",
    "RLConfig",
    "MetaConfig",
    "RuntimeConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "validate_config",
    "parse_config_yaml",
    "ConfigYamlLoader",
    "Rule",
    "FIELD_RULES",
]


class ConfigYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats: PyYAML's YAML 1.1 resolver reads ``1e-3`` (no
    dot) as a string; here it is a float, in files and in ``--set`` values alike."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
ConfigYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigYamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_config_yaml(text: str) -> Any:
    """Parse config YAML (a file's text or one ``--set`` value) with :class:`ConfigYamlLoader`."""
    return yaml.load(text, Loader=ConfigYamlLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class DataConfig:
    """Where the images come from and how they are sized."""

    source: str = "embedded"
    """'embedded' (generated, cached under ``root``) or 'coco' (the paths below)."""
    root: str = "data"
    """Cache directory of embedded datasets."""
    num_train: int = 800
    """Embedded: training images."""
    num_val: int = 200
    """Embedded: validation images."""
    regime: str = "mixed"
    """Embedded: object-scale regime (``rlpkd.data.synthetic.REGIMES``): a size mix of every
    image's objects ('mixed', 'small', 'large', 'small-only', 'medium-only', 'large-only') or
    'per-image' (each image draws one of the three single-band regimes)."""
    seed: int = 0
    """Embedded: generator seed."""
    image_size: int = 128
    """Input side in pixels (images are letterboxed to a square)."""
    train_images: str = ""
    """COCO: training image directory."""
    train_annotations: str = ""
    """COCO: training annotation JSON."""
    val_images: str = ""
    """COCO: validation image directory."""
    val_annotations: str = ""
    """COCO: validation annotation JSON."""
    hflip_prob: float = 0.5
    """Probability of a horizontal flip of a training image."""
    preload: bool = True
    """Decode all images into memory once (small datasets only)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    level_thresholds: list[float] = field(default_factory=lambda: [8.0, 16.0, 32.0])
    """FCOS regression-distance boundaries (px) between P2|P3, P3|P4, P4|P5."""


@dataclass
class ModelConfig:
    """The architecture of one ResNet + FPN + FCOS detector (``build_detector`` takes it):
    everything the FLOPs model needs to know."""

    depth: int = 18
    """ResNet depth: 18, 34, 50 or 101."""
    width: float = 1.0
    """Multiplier on every ResNet stage's channels (1.0 = torchvision's ResNet)."""
    fpn_channels: int = 256
    """Channels of every FPN output (P2-P5)."""
    head_convs: int = 4
    """3x3 convs in each of the head's two towers."""
    pretrained: bool = False
    """Load ImageNet weights for the ResNet from the local torch hub cache (never downloaded)."""


@dataclass
class ScheduleConfig:
    """An optimisation schedule."""

    epochs: int = 12
    """Passes over the training set."""
    batch_size: int = 16
    """Images per step."""
    optimizer: str = "adamw"
    """'sgd' or 'adamw'."""
    lr: float = 2e-3
    """Peak learning rate (cosine decay after a linear warm-up)."""
    weight_decay: float = 1e-4
    """Weight decay."""
    momentum: float = 0.9
    """SGD momentum."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    grad_clip: float = 10.0
    """Max global gradient norm (0 disables)."""


@dataclass
class DistillConfig:
    """The per-level KD objective."""

    loss: str = "pkd"
    """KD loss name: mse, pkd, fgd or kl."""
    loss_params: dict[str, float] = field(default_factory=dict)
    """Extra keyword arguments of the KD loss (e.g. temperature)."""
    weight: float = 1.0
    """Weight of the summed, normalised per-level KD terms against the detection loss."""
    normalise: bool = True
    """Divide each level's KD loss by its running mean (DESIGN §3)."""
    norm_momentum: float = 0.99
    """EMA momentum of the running per-level scale."""
    gradnorm: bool = False
    """Balance {detection, KD P2..P5} with GradNorm (Chen et al., 2018)."""
    gradnorm_alpha: float = 1.5
    """GradNorm's restoring-force exponent."""
    gradnorm_lr: float = 0.025
    """Learning rate of the GradNorm weights."""
    levels: str = "all"
    """Default level set of scripts/distill.py: none, all, P2,P4, or random:FRACTION."""
    planted_class: int = -1
    """A planted rule for testing level policies (``rlpkd.distill.planted``): on images holding a
    box of this contiguous class index, the teacher's targets at ``planted_levels`` are corrupted
    (rotated by 180°), so distilling them is harmful by construction; -1: no planted rule."""
    planted_levels: list[str] = field(default_factory=lambda: ["P2", "P3"])
    """The levels the planted rule corrupts (used only when ``planted_class`` >= 0)."""
    planted_corruption: str = "rotate"
    """How the planted rule corrupts a target: ``rotate`` (by 180°: objects in the wrong place)
    or ``negate`` (the target times −1: every feature anti-correlated with the teacher's)."""


@dataclass
class EvalConfig:
    """COCO evaluation."""

    batch_size: int = 32
    """Images per inference batch."""
    score_threshold: float = 0.05
    """Minimum detection score kept."""
    max_detections: int = 100
    """Detections kept per image."""


@dataclass
class ExperimentConfig:
    """The fixed-level comparison that `make run` performs."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Student seeds for the main comparison."""
    level_sets: list[str] = field(default_factory=lambda: ["none", "all"])
    """Level sets compared over every seed."""
    ablation: list[str] = field(default_factory=lambda: ["P2", "P3", "P4", "P5"])
    """Level sets of the single-level ablation."""
    ablation_seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of the ablation runs."""
    control_seeds: list[int] = field(default_factory=list)
    """Seeds of ``train_rl``'s verification controls (shuffled masks, random at the policy's
    FLOPs, the scale rule, ``rl.static_baselines``); empty: ``seeds``. The policy, no KD and all
    levels always run over ``seeds``. Fewer control seeds keep ``make run`` short; each control is
    then compared with the policy on the same (first) seeds."""
    headroom_report: str = ""
    """A ``headroom.json`` (``scripts/headroom.py``) on the same data: ``train_rl`` then also
    trains its *oracle* as a verification control (each image distils its regime's best subset,
    ``best_subset_by_regime``) on ``control_seeds``. Empty: no oracle."""


@dataclass
class RLConfig:
    """Phase 2: the per-sample level-selection decision process and PPO (DESIGN §5-6)."""

    reward: str = "value"
    """Each decision's reward (``envs.rewards``): 'value' = its chosen levels' share of the
    per-(sample, level) value signal v_il (``rlpkd.distill.level_value``), normalised, minus the
    FLOPs price; 'gap_drop' = its normalised all-level KD-gap drop over the update minus the price."""
    learner: str = "bank"
    """What PPO learns from: 'bank' = a bandit env over the decision bank (contexts of the live
    env with the values of all four levels, so the exact reward of whichever subset is chosen;
    needs a full-information reward, 'value'); 'live' = the live env, one student update per step."""
    bank_decisions: int = 3072
    """Decisions the live env contributes to the decision bank (uniformly random subsets)."""
    bank_heldout_fraction: float = 0.25
    """Share of the bank's images whose contexts are held out of PPO to measure its learning."""
    lam: float = 0.5
    """λ: weight of the FLOPs penalty kd_flops(levels) / kd_flops(all) in each sample's reward: the
    price of all levels in units of the typical reward of distilling all levels."""
    budget: float | None = None
    """A KD budget: the policy's mean kd FLOPs per image as a fraction of all levels'. Phase 2
    moves λ as a dual variable to hold it (PID Lagrangian, ``policies.budget_dual``; ``lam`` is
    its start), Phase 3 meets it in every epoch and trains the controls of
    ``rlpkd.training.controls`` at the policy's measured cost. Empty (null): the fixed price."""
    heldout_size: int = 16
    """With rl.reward 'value': images in the fixed held-out batch V (the first, at most all, of
    ``heldout_split(…, search.holdout_fraction, runtime.seed).val``; the env trains on the rest)."""
    reward_baseline: str = "none"
    """``leave_one_out``: each decision's reward minus the mean reward of the other B-1 decisions
    of the same update (RLOO, Kool et al. 2019), which removes what the step shares (e.g. the size
    of the held-out gradient) without biasing the policy gradient; ``none``: the reward as is."""
    slots: int = 8
    """Decisions per student update: the env's distillation batch size B (one agent per slot)."""
    episode_steps: int = 8
    """Student updates an env episode continues one snapshot for (then it is truncated)."""
    snapshot_fractions: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])
    """Training stages (fractions of the student schedule) of the snapshot pool episodes start from."""
    iterations: int = 20
    """PPO training iterations."""
    train_batch_size: int = 256
    """Decisions per PPO iteration."""
    minibatch_size: int = 64
    """PPO minibatch size."""
    num_epochs: int = 4
    """PPO epochs per iteration."""
    lr: float = 3e-4
    """PPO learning rate."""
    gamma: float = 0.0
    """Discount factor; 0: each decision is a contextual bandit (a slot's next observation is an
    unrelated sample), see docs/decision_process.md."""
    entropy_coeff: float = 0.01
    """Entropy bonus."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """MLP hidden layers of the policy and value networks."""
    policy_head: str = "joint"
    """``joint``: 16 free logits, one per level subset; ``factorised``: one logit per level, the
    subset's logit their sum over its levels (independent Bernoulli choices per level, so what is
    learnt about a level is shared by the 8 subsets holding it); see policies/level_policy_module."""
    num_env_runners: int = 0
    """RLlib env runners (0 = sample in the driver; needed on 2 CPUs)."""
    num_learners: int = 0
    """RLlib learner workers (0 = learn in the driver)."""
    num_gpus_per_learner: float = 0.0
    """GPUs per RLlib learner."""
    greedy: bool = True
    """Phase 3: the frozen policy takes its most likely subset (False: samples from it)."""
    static_baselines: list[str] = field(default_factory=lambda: ["P2"])
    """Phase 3 static-subset baselines (default: the best single level of the ablation)."""


@dataclass
class MetaConfig:
    """MAML-style warm start: first-order meta-learning (Reptile) of the policy's weights."""

    warm_start: str = ""
    """Path of a meta-checkpoint to load before PPO ('' = start from scratch)."""
    regimes: list[str] = field(default_factory=lambda: ["small", "large", "mixed"])
    """Embedded-dataset regimes of the task distribution."""
    lambdas: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])
    """λ values of the task distribution."""
    student_depths: list[int] = field(default_factory=lambda: [18])
    """Student ResNet depths of the task distribution."""
    meta_iterations: int = 4
    """Outer Reptile iterations (one sampled task each)."""
    inner_iterations: int = 2
    """PPO iterations on a task per outer iteration."""
    meta_lr: float = 0.5
    """Reptile step size ε: θ ← θ + ε (θ_task − θ)."""
    compare_scratch: bool = True
    """With a warm start, also train a scratch policy to report the warm-vs-scratch curves."""


@dataclass
class SearchConfig:
    """NAS baselines that pick one static level subset (DESIGN §7, ``scripts/search_nas.py``).

    A search never sees the val split: it trains on part of the training split and scores on the
    rest (``holdout_fraction``). The chosen subset is then retrained on ``student_schedule``.
    """

    lam: float = 0.0
    """FLOPs penalty of every method's objective: score = AP - lam * kd_flops(S) / kd_flops(all).
    DARTS adds lam * sum_l gate_l * c_l with c_l = kd_flops({l}) / sum_k kd_flops({k}); GDAS adds
    lam * kd_flops(sampled S) / kd_flops(all)."""
    holdout_fraction: float = 0.25
    """Fraction of the training split held out as the search's validation set."""
    fitness_epochs: int = 1
    """Epochs of one fitness run (evolution, random, exhaustive) on the search-train part."""
    gradient_steps: int = 100
    """DARTS/GDAS: alternating student / architecture updates."""
    alpha_lr: float = 0.05
    """DARTS/GDAS: Adam learning rate of the architecture logits."""
    unrolled_lr: float = 0.0
    """DARTS/GDAS: xi of the virtual step w' = w - xi * grad_w L_train (0: the student's lr)."""
    finite_difference_eps: float = 0.01
    """DARTS/GDAS: epsilon of the finite-difference Hessian-vector product (DARTS eq. 8)."""
    gate_threshold: float = 0.5
    """DARTS keeps the levels whose gate sigmoid(alpha_l) ends above this."""
    tau_max: float = 10.0
    """GDAS: Gumbel-softmax temperature at the first step."""
    tau_min: float = 0.1
    """GDAS: temperature at the last step (annealed linearly)."""
    population: int = 4
    """Evolution: population size."""
    sample_size: int = 2
    """Evolution: tournament size (candidates sampled per cycle)."""
    cycles: int = 6
    """Evolution: children evaluated after the initial population."""
    random_samples: int = 6
    """Random search: subsets drawn (with replacement; repeats are not retrained)."""


@dataclass
class SweepConfig:
    """``scripts/sweep.py``: one Ray Tune experiment over RL lambdas, NAS methods, the static grid
    and baselines, each over seeds (DESIGN §8)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Seeds of every trial kind (student seed; for RL also the policy-learning seed)."""
    rl_lams: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.3])
    """lambda values of the RL trials (the RL Pareto front); empty for no RL trials."""
    nas_methods: list[str] = field(
        default_factory=lambda: ["darts", "gdas", "evolution", "random", "exhaustive"]
    )
    """Search methods (``rlpkd.search.methods.SEARCH_METHODS``) run as trials."""
    static_grid: bool = True
    """Train all 16 static subsets (the exhaustive grid and static Pareto front)."""
    baselines: list[str] = field(default_factory=list)
    """Extra level specs run as trials, e.g. 'random:0.5' or 'P2,P3'."""
    trial_cpus: float = 1.0
    """CPUs reserved per trial."""
    trial_gpus: float = 0.0
    """GPUs per trial; fractions share a GPU (0.25: four trials per GPU)."""
    trial_threads: int = 1
    """torch CPU threads inside a trial."""
    max_concurrent_trials: int = 0
    """At most this many trials at once (0: as resources allow)."""
    scheduler: str = "fifo"
    """'fifo' or 'asha' (ASHA stops RL trials early on the PPO return; others are unaffected)."""
    asha_grace_period: int = 2
    """ASHA: PPO iterations before a trial can be stopped."""
    asha_reduction_factor: int = 2
    """ASHA: 1/reduction_factor of the trials go on at each rung."""


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    out: str = "runs/default"
    """Run directory (DESIGN §11)."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:N]'."""
    seed: int = 0
    """Seed of the teacher and of a single student run."""
    num_threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on CPU)."""
    progress: bool = True
    """Show tqdm progress bars."""
    student_workers: int = 1
    """Phase-3 students of ``train_rl`` trained at once, each in its own process with
    ``num_threads`` split between them (``experiments/student_workers.py``); 1: one at a time in
    the main process."""
    teacher_cache_gb: float = 0.0
    """Memory (GiB, per process) for the frozen teacher's pyramid per distinct training image,
    shared by the students a process trains (``rlpkd/models/teacher_cache.py``): a wall-time
    saving on small data; kd_gflops are counted as without it. 0: off."""


@dataclass
class Config:
    """A complete experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    """The dataset."""
    teacher: ModelConfig = field(
        default_factory=lambda: ModelConfig(depth=50, fpn_channels=256, head_convs=4)
    )
    """The teacher detector."""
    student: ModelConfig = field(default_factory=ModelConfig)
    """The student detector."""
    teacher_schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=24))
    """Phase 1: teacher training."""
    student_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Student training (with or without KD)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """The KD objective."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    """The fixed-level comparison."""
    rl: RLConfig = field(default_factory=RLConfig)
    """Phase 2: the decision process and PPO."""
    meta: MetaConfig = field(default_factory=MetaConfig)
    """The meta-learned warm start."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """NAS baselines (DESIGN §7)."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Ray Tune sweeps (DESIGN §8)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Execution."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' expects a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' expects a mapping, got {value!r}")
        return {str(k): _coerce(v, value_type, f"{key}.{k}", source) for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{source}: unknown key '{where}'; valid keys here: {', '.join(names)}")
    default = cls()
    kwargs = {}
    for name in names:
        key = f"{prefix}.{name}" if prefix else name
        if name in values:
            current = getattr(default, name)
            if dataclasses.is_dataclass(current) and isinstance(values[name], dict):
                merged = config_to_dict(current) | values[name]
                kwargs[name] = _build(type(current), merged, key, source)
            else:
                kwargs[name] = _coerce(values[name], hints[name], key, source)
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (YAML-safe) of a config dataclass."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a validated Config; unknown keys and wrong types raise ConfigError."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return _build(Config, values, "", source)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as config YAML) to a raw config dict."""
    result = copy.deepcopy(values) if values else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{key}' is not a section")
        try:
            node[keys[-1]] = parse_config_yaml(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return result


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides and validate types and ranges (not registry names:
    see ``experiments.validation``)."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = parse_config_yaml(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config file ({error})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if overrides:
        values = apply_overrides(values, overrides)
        source = f"{source} with --set overrides"
    config = config_from_dict(values, source)
    validate_config(config, source)
    return config


# ---------------------------------------------------------------------------------------------
# Value checks: one rule per numeric / named field, checked after the types.


@dataclass(frozen=True)
class Rule:
    """A constraint on one config value (each item of a list value): ``test`` and its text."""

    test: Callable[[Any], bool]
    """True when the value is allowed."""
    allowed: str
    """What is allowed, for the error message (e.g. '>= 1', 'in [0, 1]')."""


def at_least(low: float) -> Rule:
    """value >= low."""
    return Rule(lambda v: v >= low, f">= {low}")


def greater_than(low: float) -> Rule:
    """value > low."""
    return Rule(lambda v: v > low, f"> {low}")


def within(low: float, high: float, closed_high: bool = True) -> Rule:
    """low <= value <= high (or < high when ``closed_high`` is False)."""
    if closed_high:
        return Rule(lambda v: low <= v <= high, f"in [{low}, {high}]")
    return Rule(lambda v: low <= v < high, f"in [{low}, {high})")


def one_of(*choices: Any) -> Rule:
    """value in choices."""
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def matching(pattern: str, description: str) -> Rule:
    """A string that fully matches the regular expression ``pattern``."""
    compiled = re.compile(pattern)
    return Rule(lambda v: compiled.fullmatch(v) is not None, description)


ANY = Rule(lambda v: True, "anything")
POSITIVE = greater_than(0)
NON_NEGATIVE = at_least(0)
COUNT = at_least(1)
FRACTION = within(0, 1)
MOMENTUM = within(0, 1, closed_high=False)
NON_EMPTY = Rule(lambda v: v != "", "a non-empty string")

FIELD_RULES: dict[type, dict[str, Rule]] = {
    DataConfig: {
        "source": one_of("embedded", "coco"),
        "root": NON_EMPTY,
        "num_train": COUNT,
        "num_val": COUNT,
        "regime": ANY,  # a registry name: experiments.validation
        "seed": NON_NEGATIVE,
        "image_size": Rule(lambda v: v >= 32 and v % 32 == 0, "a multiple of 32, >= 32"),
        "train_images": ANY,  # required for COCO: checked below and by experiments.cli
        "train_annotations": ANY,
        "val_images": ANY,
        "val_annotations": ANY,
        "hflip_prob": FRACTION,
        "preload": ANY,
        "num_workers": NON_NEGATIVE,
        "level_thresholds": POSITIVE,
    },
    ModelConfig: {
        "depth": ANY,  # a registry name: experiments.validation
        "width": POSITIVE,
        "fpn_channels": COUNT,
        "head_convs": NON_NEGATIVE,
        "pretrained": ANY,
    },
    ScheduleConfig: {
        "epochs": COUNT,
        "batch_size": COUNT,
        "optimizer": one_of("sgd", "adamw"),
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "momentum": MOMENTUM,
        "warmup_steps": NON_NEGATIVE,
        "grad_clip": NON_NEGATIVE,
    },
    DistillConfig: {
        "loss": ANY,  # a registry name: experiments.validation
        "loss_params": ANY,  # finite; names checked by experiments.validation
        "weight": NON_NEGATIVE,
        "normalise": ANY,
        "norm_momentum": MOMENTUM,
        "gradnorm": ANY,
        "gradnorm_alpha": NON_NEGATIVE,
        "gradnorm_lr": POSITIVE,
        "levels": ANY,  # a level spec: experiments.validation
        "planted_class": at_least(-1),  # < the dataset's class count: rlpkd.distill.planted
        "planted_levels": one_of(*LEVELS),
        "planted_corruption": one_of("rotate", "negate"),
    },
    EvalConfig: {
        "batch_size": COUNT,
        "score_threshold": FRACTION,
        "max_detections": COUNT,
    },
    ExperimentConfig: {
        "seeds": NON_NEGATIVE,
        "level_sets": ANY,  # level specs: experiments.validation
        "ablation": ANY,
        "ablation_seeds": NON_NEGATIVE,
        "control_seeds": NON_NEGATIVE,
        "headroom_report": ANY,
    },
    RLConfig: {
        "reward": ANY,  # a registry name: experiments.validation
        "learner": one_of("bank", "live"),
        "bank_decisions": COUNT,
        "bank_heldout_fraction": Rule(lambda v: 0 < v < 1, "in (0, 1)"),
        "lam": NON_NEGATIVE,
        "budget": Rule(lambda v: v is None or 0 < v < 1, "empty (null) or in (0, 1)"),
        "heldout_size": COUNT,
        "reward_baseline": one_of("none", "leave_one_out"),
        "slots": COUNT,
        "episode_steps": COUNT,
        "snapshot_fractions": FRACTION,
        "iterations": COUNT,
        "train_batch_size": COUNT,
        "minibatch_size": COUNT,
        "num_epochs": COUNT,
        "lr": POSITIVE,
        "gamma": FRACTION,
        "entropy_coeff": NON_NEGATIVE,
        "hidden_sizes": COUNT,
        "policy_head": one_of("joint", "factorised"),
        "num_env_runners": NON_NEGATIVE,
        "num_learners": NON_NEGATIVE,
        "num_gpus_per_learner": NON_NEGATIVE,
        "greedy": ANY,
        "static_baselines": ANY,  # level specs: experiments.validation
    },
    MetaConfig: {
        "warm_start": ANY,  # a readable checkpoint: experiments.cli
        "regimes": ANY,  # registry names: experiments.validation
        "lambdas": NON_NEGATIVE,
        "student_depths": ANY,  # registry names: experiments.validation
        "meta_iterations": COUNT,
        "inner_iterations": COUNT,
        "meta_lr": Rule(lambda v: 0 < v <= 1, "in (0, 1]"),
        "compare_scratch": ANY,
    },
    SearchConfig: {
        "lam": NON_NEGATIVE,
        "holdout_fraction": Rule(lambda v: 0 < v < 1, "in (0, 1)"),
        "fitness_epochs": COUNT,
        "gradient_steps": COUNT,
        "alpha_lr": POSITIVE,
        "unrolled_lr": NON_NEGATIVE,
        "finite_difference_eps": POSITIVE,
        "gate_threshold": FRACTION,
        "tau_max": POSITIVE,
        "tau_min": POSITIVE,
        "population": COUNT,
        "sample_size": COUNT,
        "cycles": NON_NEGATIVE,
        "random_samples": COUNT,
    },
    SweepConfig: {
        "seeds": NON_NEGATIVE,
        "rl_lams": NON_NEGATIVE,
        "nas_methods": ANY,  # registry names: experiments.validation
        "static_grid": ANY,
        "baselines": ANY,  # level specs: experiments.validation
        "trial_cpus": POSITIVE,
        "trial_gpus": NON_NEGATIVE,
        "trial_threads": COUNT,
        "max_concurrent_trials": NON_NEGATIVE,
        "scheduler": one_of("fifo", "asha"),
        "asha_grace_period": COUNT,
        "asha_reduction_factor": at_least(2),
    },
    RuntimeConfig: {
        "out": NON_EMPTY,
        "device": matching(r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
        "seed": NON_NEGATIVE,
        "num_threads": NON_NEGATIVE,
        "amp": ANY,
        "channels_last": ANY,
        "progress": ANY,
        "student_workers": COUNT,
        "teacher_cache_gb": NON_NEGATIVE,
    },
}
"""The allowed values of every field of every section (a list field: of each item). Every float
anywhere must also be finite. Registry names (KD losses, search methods, level specs, regimes,
ResNet depths) live above this layer and are checked by ``experiments.validation``."""

NON_EMPTY_LISTS = ("meta.regimes", "meta.lambdas", "meta.student_depths", "rl.snapshot_fractions")
"""List fields that must hold at least one item."""


def _check_value(key: str, value: Any, rule: Rule, source: str) -> None:
    items = value.items() if isinstance(value, dict) else None
    if items is not None:
        for name, item in items:
            _check_value(f"{key}.{name}", item, rule, source)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(f"{key}[{index}]", item, rule, source)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' is {value}; it must be a finite number")
    if not rule.test(value):
        raise ConfigError(f"{source}: '{key}' is {value!r}; allowed: {rule.allowed}")


def _check_fields(section: Any, prefix: str, source: str) -> None:
    rules = FIELD_RULES[type(section)]
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        key = f"{prefix}.{item.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, key, source)
            continue
        _check_value(key, value, rules[item.name], source)
        if key in NON_EMPTY_LISTS and not value:
            raise ConfigError(f"{source}: '{key}' is empty; it needs at least one item")


def validate_config(config: Config, source: str = "config") -> None:
    """Check every value's range (``FIELD_RULES``, finite floats) and the rules that tie fields
    together; the first violation is a one-line ConfigError naming the key, the value and what is
    allowed."""
    for item in dataclasses.fields(config):
        _check_fields(getattr(config, item.name), item.name, source)
    thresholds = config.data.level_thresholds
    if len(thresholds) != 3 or any(
        a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)
    ):
        raise ConfigError(
            f"{source}: 'data.level_thresholds' is {thresholds}; allowed: 3 increasing numbers"
        )
    if config.data.source == "coco":
        for name in ("train_images", "train_annotations", "val_images", "val_annotations"):
            if not getattr(config.data, name):
                raise ConfigError(
                    f"{source}: 'data.{name}' is empty; data.source 'coco' needs all four paths"
                )
    search = config.search
    if search.sample_size > search.population:
        raise ConfigError(
            f"{source}: 'search.sample_size' is {search.sample_size}; allowed: at most "
            f"search.population ({search.population})"
        )
    if search.tau_min > search.tau_max:
        raise ConfigError(
            f"{source}: 'search.tau_min' is {search.tau_min}; allowed: at most search.tau_max "
            f"({search.tau_max})"
        )
    experiment = config.experiment
    if experiment.control_seeds and (
        not experiment.seeds
        or experiment.control_seeds[0] != experiment.seeds[0]
        or not set(experiment.control_seeds) <= set(experiment.seeds)
    ):
        raise ConfigError(
            f"{source}: 'experiment.control_seeds' is {experiment.control_seeds}; allowed: empty, "
            f"or seeds of experiment.seeds ({experiment.seeds}) starting with its first"
        )
    if config.rl.minibatch_size > config.rl.train_batch_size:
        raise ConfigError(
            f"{source}: 'rl.minibatch_size' is {config.rl.minibatch_size}; allowed: at most "
            f"rl.train_batch_size ({config.rl.train_batch_size})"
        )


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
