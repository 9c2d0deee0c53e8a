"""Typed experiment config: YAML -> dataclasses with defaults, dotted overrides, clear errors.

A config is data (``yaml.safe_load`` only). Every field carries a one-line docstring; the resolved
config is written to ``<out>/config.yaml`` so a run is reproducible from that file alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlpkd.errors import ConfigError

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
    "config_fingerprint",
    "validate_config",
]


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
    """Embedded: object-scale regime, 'mixed', 'small' or 'large'."""
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
    """A ResNet + FPN + FCOS detector."""

    depth: int = 18
    """ResNet depth: 18, 34, 50 or 101."""
    width: float = 1.0
    """Multiplier on every ResNet stage's channels (1.0 = torchvision's ResNet)."""
    fpn_channels: int = 256
    """Channels of P2-P5."""
    head_convs: int = 4
    """3x3 convs per head tower."""
    pretrained: bool = False
    """ImageNet weights from the local torch hub cache (never downloaded)."""


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


@dataclass
class RLConfig:
    """Phase 2: the per-sample level-selection decision process and PPO (DESIGN §5-6)."""

    lam: float = 0.5
    """λ: weight of the FLOPs penalty kd_flops(levels) / kd_flops(all) in each sample's reward."""
    slots: int = 8
    """Decisions per student update: the env's distillation batch size B (one agent per slot)."""
    episode_steps: int = 8
    """Student updates per episode."""
    snapshot_fractions: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])
    """Training stages (fractions of the student schedule) of the snapshot pool episodes start from."""
    flops_budget: float = 0.0
    """Per-episode KD GFLOPs budget shown in the observation (0 = no budget)."""
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
    gamma: float = 0.9
    """Discount factor."""
    entropy_coeff: float = 0.01
    """Entropy bonus."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """MLP hidden layers of the policy and value networks."""
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
    """Search methods (``rlpkd.search.SEARCH_METHODS``) run as trials."""
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
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    result = yaml.safe_load(yaml.safe_dump(values)) or {}
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
        node[keys[-1]] = yaml.safe_load(raw)
    return result


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides and validate it."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if overrides:
        values = apply_overrides(values, overrides)
        source = f"{source} with --set overrides"
    config = config_from_dict(values, source)
    validate_config(config, source)
    return config


def validate_config(config: Config, source: str = "config") -> None:
    """Value checks that types alone cannot express."""
    if config.data.source not in ("embedded", "coco"):
        raise ConfigError(
            f"{source}: 'data.source' must be 'embedded' or 'coco', got {config.data.source!r}"
        )
    if len(config.data.level_thresholds) != 3 or sorted(config.data.level_thresholds) != list(
        config.data.level_thresholds
    ):
        raise ConfigError(
            f"{source}: 'data.level_thresholds' must be 3 increasing numbers, "
            f"got {config.data.level_thresholds}"
        )
    for name in ("teacher_schedule", "student_schedule"):
        schedule = getattr(config, name)
        if schedule.optimizer not in ("sgd", "adamw"):
            raise ConfigError(
                f"{source}: '{name}.optimizer' must be 'sgd' or 'adamw', got {schedule.optimizer!r}"
            )
        if schedule.batch_size < 1 or schedule.epochs < 0:
            raise ConfigError(f"{source}: '{name}' needs batch_size >= 1 and epochs >= 0")
    search = config.search
    if not 0.0 < search.holdout_fraction < 1.0:
        raise ConfigError(
            f"{source}: 'search.holdout_fraction' must lie in (0, 1), got {search.holdout_fraction}"
        )
    if not 1 <= search.sample_size <= search.population:
        raise ConfigError(
            f"{source}: 'search.sample_size' must lie in [1, search.population], "
            f"got {search.sample_size} with population {search.population}"
        )
    if search.tau_min <= 0 or search.tau_max < search.tau_min:
        raise ConfigError(f"{source}: 'search' needs 0 < tau_min <= tau_max")
    if config.sweep.scheduler not in ("fifo", "asha"):
        raise ConfigError(
            f"{source}: 'sweep.scheduler' must be 'fifo' or 'asha', got {config.sweep.scheduler!r}"
        )
    if config.sweep.trial_cpus <= 0 or config.sweep.trial_gpus < 0:
        raise ConfigError(f"{source}: 'sweep' needs trial_cpus > 0 and trial_gpus >= 0")
    if config.data.image_size % 32:
        raise ConfigError(
            f"{source}: 'data.image_size' must be a multiple of 32, got {config.data.image_size}"
        )


def config_fingerprint(config: Config) -> str:
    """A short hash of the whole resolved config (to recognise results made from it)."""
    text = json.dumps(config_to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
