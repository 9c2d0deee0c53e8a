"""The experiment config's schema: one dataclass per section, each field with its default, its
allowed values (``ruled``) and a one-line docstring, from which ``FIELD_RULES`` is read
(``rlpkd.config_validation`` checks them). Loading YAML is ``rlpkd.config``'s job."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rlpkd.config_rules import (
    ANY,
    COUNT,
    FRACTION,
    MOMENTUM,
    NON_EMPTY,
    NON_NEGATIVE,
    POSITIVE,
    RULE_KEY,
    Rule,
    at_least,
    matching,
    one_of,
    ruled,
)
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
    "SearchConfig",
    "SweepConfig",
    "RuntimeConfig",
    "Config",
    "FIELD_RULES",
]


@dataclass
class DataConfig:
    """Where the images come from and how they are sized."""

    source: str = ruled(one_of("embedded", "coco"), "embedded")
    """'embedded' (generated, cached under ``root``) or 'coco' (the paths below)."""
    root: str = ruled(NON_EMPTY, "data")
    """Cache directory of embedded datasets."""
    num_train: int = ruled(COUNT, 800)
    """Embedded: training images."""
    num_val: int = ruled(COUNT, 200)
    """Embedded: validation images."""
    regime: str = ruled(ANY, "mixed")  # a registry name: experiments.validation
    """Embedded: object-scale regime (``rlpkd.data.synthetic.REGIMES``): a size mix of every
    image's objects ('mixed', 'small', 'large', 'small-only', 'medium-only', 'large-only') or
    'per-image' (each image draws one of the three single-band regimes)."""
    seed: int = ruled(NON_NEGATIVE, 0)
    """Embedded: generator seed."""
    image_size: int = ruled(Rule(lambda v: v >= 32 and v % 32 == 0, "a multiple of 32, >= 32"), 128)
    """Input side in pixels (images are letterboxed to a square)."""
    train_images: str = ruled(ANY, "")  # required for COCO: checked below and by experiments.cli
    """COCO: training image directory."""
    train_annotations: str = ruled(ANY, "")
    """COCO: training annotation JSON."""
    val_images: str = ruled(ANY, "")
    """COCO: validation image directory."""
    val_annotations: str = ruled(ANY, "")
    """COCO: validation annotation JSON."""
    hflip_prob: float = ruled(FRACTION, 0.5)
    """Probability of a horizontal flip of a training image."""
    preload: bool = ruled(ANY, True)
    """Decode all images into memory once (small datasets only)."""
    num_workers: int = ruled(NON_NEGATIVE, 0)
    """DataLoader worker processes."""
    level_thresholds: list[float] = ruled(POSITIVE, factory=lambda: [8.0, 16.0, 32.0])
    """FCOS regression-distance boundaries (px) between P2|P3, P3|P4, P4|P5."""


@dataclass
class ModelConfig:
    """The architecture of one ResNet + FPN + FCOS detector (``build_detector`` takes it):
    everything the FLOPs model needs to know."""

    depth: int = ruled(ANY, 18)  # a registry name: experiments.validation
    """ResNet depth: 18, 34, 50 or 101."""
    width: float = ruled(POSITIVE, 1.0)
    """Multiplier on every ResNet stage's channels (1.0 = torchvision's ResNet)."""
    fpn_channels: int = ruled(COUNT, 256)
    """Channels of every FPN output (P2-P5)."""
    head_convs: int = ruled(NON_NEGATIVE, 4)
    """3x3 convs in each of the head's two towers."""
    pretrained: bool = ruled(ANY, False)
    """Load ImageNet weights for the ResNet from the local torch hub cache (never downloaded)."""
    init: str = ruled(ANY, "")  # teacher only, on torchvision's architecture: config_validation
    """Teacher only: a state dict of torchvision's COCO-trained ``fcos_resnet50_fpn`` (the torch
    hub cache's ``fcos_resnet50_fpn_coco-99b0c9b7.pth``; never downloaded) that Phase 1 starts
    from, frozen, training only what it lacks (the P2 lateral and output) with teacher_schedule.
    Needs depth 50, width 1.0, fpn_channels 256, head_convs 4, pretrained false; '' = none."""


@dataclass
class ScheduleConfig:
    """An optimisation schedule."""

    epochs: int = ruled(COUNT, 12)
    """Passes over the training set."""
    batch_size: int = ruled(COUNT, 16)
    """Images per step."""
    optimizer: str = ruled(one_of("sgd", "adamw"), "adamw")
    """'sgd' or 'adamw'."""
    lr: float = ruled(POSITIVE, 2e-3)
    """Peak learning rate (cosine decay after a linear warm-up)."""
    weight_decay: float = ruled(NON_NEGATIVE, 1e-4)
    """Weight decay."""
    momentum: float = ruled(MOMENTUM, 0.9)
    """SGD momentum."""
    warmup_steps: int = ruled(NON_NEGATIVE, 50)
    """Linear warm-up steps."""
    grad_clip: float = ruled(NON_NEGATIVE, 10.0)
    """Max global gradient norm (0 disables)."""


@dataclass
class DistillConfig:
    """The per-level KD objective."""

    loss: str = ruled(ANY, "pkd")  # a registry name: experiments.validation
    """KD loss name: mse, pkd, fgd or kl."""
    loss_params: dict[str, float] = ruled(
        ANY, factory=dict
    )  # finite; names checked by experiments.validation
    """Extra keyword arguments of the KD loss (e.g. temperature)."""
    weight: float = ruled(NON_NEGATIVE, 1.0)
    """Weight of the summed, normalised per-level KD terms against the detection loss."""
    normalise: bool = ruled(ANY, True)
    """Divide each level's KD loss by its running mean (DESIGN §3)."""
    norm_momentum: float = ruled(MOMENTUM, 0.99)
    """EMA momentum of the running per-level scale."""
    gradnorm: bool = ruled(ANY, False)
    """Balance {detection, KD P2..P5} with GradNorm (Chen et al., 2018)."""
    gradnorm_alpha: float = ruled(NON_NEGATIVE, 1.5)
    """GradNorm's restoring-force exponent."""
    gradnorm_lr: float = ruled(POSITIVE, 0.025)
    """Learning rate of the GradNorm weights."""
    levels: str = ruled(ANY, "all")  # a level spec: experiments.validation
    """Default level set of scripts/distill.py: none, all, P2,P4, or random:FRACTION."""
    planted_class: int = ruled(
        at_least(-1), -1
    )  # < the dataset's class count: rlpkd.distill.planted
    """A planted rule for testing level policies (``rlpkd.distill.planted``): on images holding a
    box of this contiguous class index, the teacher's targets at ``planted_levels`` are corrupted
    (rotated by 180°), so distilling them is harmful by construction; -1: no planted rule."""
    planted_levels: list[str] = ruled(one_of(*LEVELS), factory=lambda: ["P2", "P3"])
    """The levels the planted rule corrupts (used only when ``planted_class`` >= 0)."""
    planted_corruption: str = ruled(one_of("rotate", "negate"), "rotate")
    """How the planted rule corrupts a target: ``rotate`` (by 180°: objects in the wrong place)
    or ``negate`` (the target times −1: every feature anti-correlated with the teacher's)."""


@dataclass
class EvalConfig:
    """COCO evaluation."""

    batch_size: int = ruled(COUNT, 32)
    """Images per inference batch."""
    score_threshold: float = ruled(FRACTION, 0.05)
    """Minimum detection score kept."""
    max_detections: int = ruled(COUNT, 100)
    """Detections kept per image."""


@dataclass
class ExperimentConfig:
    """The fixed-level comparison that `make run` performs."""

    seeds: list[int] = ruled(NON_NEGATIVE, factory=lambda: [0, 1, 2])
    """Student seeds for the main comparison."""
    level_sets: list[str] = ruled(
        ANY, factory=lambda: ["none", "all"]
    )  # level specs: experiments.validation
    """Level sets compared over every seed."""
    ablation: list[str] = ruled(ANY, factory=lambda: ["P2", "P3", "P4", "P5"])
    """Level sets of the single-level ablation."""
    ablation_seeds: list[int] = ruled(NON_NEGATIVE, factory=lambda: [0])
    """Seeds of the ablation runs."""
    control_seeds: list[int] = ruled(NON_NEGATIVE, factory=list)
    """Seeds of ``train_rl``'s verification controls (shuffled masks, random at the policy's
    FLOPs, the scale rule, ``rl.static_baselines``); empty: ``seeds``. The policy, no KD and all
    levels always run over ``seeds``. Fewer control seeds keep ``make run`` short; each control is
    then compared with the policy on the same (first) seeds."""
    controls: list[str] | None = ruled(ANY, None)  # names of experiments/controls.py's table
    """The controls that train beside the policy (``experiments/controls.py``): empty (null)
    every entry that applies (all of them with ``rl.budget``, the ``at_price`` ones without);
    a list, those of them; ``[]``, none (the policy and the references alone)."""
    headroom_report: str = ruled(ANY, "")
    """A ``headroom.json`` (``scripts/headroom.py``) on the same data: ``train_rl`` then also
    trains its *oracle* as a verification control (each image distils its regime's best subset,
    ``best_subset_by_regime``) on ``control_seeds``. Empty: no oracle."""


@dataclass
class RLConfig:
    """Phase 2: the per-sample level-selection decision process and PPO (DESIGN §5-6)."""

    reward: str = ruled(ANY, "value")  # a registry name: experiments.validation
    """Each decision's reward (``envs.rewards``): 'value' = its chosen levels' share of the
    per-(sample, level) value signal v_il (``rlpkd.distill.level_value``), normalised, minus the
    FLOPs price; 'gap_drop' = its normalised all-level KD-gap drop over the update minus the price."""
    learner: str = ruled(one_of("bank", "live"), "bank")
    """What PPO learns from: 'bank' = a bandit env over the decision bank (contexts of the live
    env with the values of all four levels, so the exact reward of whichever subset is chosen;
    needs a full-information reward, 'value'); 'live' = the live env, one student update per step."""
    bank_decisions: int = ruled(COUNT, 3072)
    """Decisions the live env contributes to the decision bank (uniformly random subsets)."""
    bank_heldout_fraction: float = ruled(Rule(lambda v: 0 < v < 1, "in (0, 1)"), 0.25)
    """Share of the bank's images whose contexts are held out of PPO to measure its learning."""
    lam: float = ruled(NON_NEGATIVE, 0.5)
    """λ: weight of the FLOPs penalty kd_flops(levels) / kd_flops(all) in each sample's reward: the
    price of all levels in units of the typical reward of distilling all levels."""
    budget: float | None = ruled(
        Rule(lambda v: v is None or 0 < v < 1, "empty (null) or in (0, 1)"), None
    )
    """A KD budget: the policy's mean kd FLOPs per image as a fraction of all levels'. Phase 2
    moves λ as a dual variable to hold it (PID Lagrangian, ``policies.budget_dual``; ``lam`` is
    its start), Phase 3 meets it in every epoch and trains the controls of
    ``experiments.controls`` at the policy's measured cost. Empty (null): the fixed price."""
    budget_pace: list[float] = ruled(NON_NEGATIVE, factory=list)
    """With rl.budget: how Phase 3 spreads the run's budget over the schedule, as weights of equal
    stretches of training progress (``[2, 1, 1, 0]``: half of it in the first quarter, none in
    the last), for the policy and every budgeted control alike; the run then holds the budget,
    its epochs do not. Empty: evenly, every epoch within ±2% (``BudgetAccount``). Without
    rl.budget it has no effect."""
    heldout_size: int = ruled(COUNT, 16)
    """With rl.reward 'value': images in the fixed held-out batch V (the first, at most all, of
    ``heldout_split(…, search.holdout_fraction, runtime.seed).val``; the env trains on the rest)."""
    reward_baseline: str = ruled(one_of("none", "leave_one_out"), "none")
    """``leave_one_out``: each decision's reward minus the mean reward of the other B-1 decisions
    of the same update (RLOO, Kool et al. 2019), which removes what the step shares (e.g. the size
    of the held-out gradient) without biasing the policy gradient; ``none``: the reward as is."""
    slots: int = ruled(COUNT, 8)
    """Decisions per student update: the env's distillation batch size B (one agent per slot)."""
    episode_steps: int = ruled(COUNT, 8)
    """Student updates an env episode continues one snapshot for (then it is truncated)."""
    snapshot_fractions: list[float] = ruled(FRACTION, factory=lambda: [0.0, 0.25, 0.5])
    """Training stages (fractions of the student schedule) of the snapshot pool episodes start from."""
    iterations: int = ruled(COUNT, 20)
    """PPO training iterations."""
    train_batch_size: int = ruled(COUNT, 256)
    """Decisions per PPO iteration."""
    minibatch_size: int = ruled(COUNT, 64)
    """PPO minibatch size."""
    num_epochs: int = ruled(COUNT, 4)
    """PPO epochs per iteration."""
    lr: float = ruled(POSITIVE, 3e-4)
    """PPO learning rate."""
    gamma: float = ruled(FRACTION, 0.0)
    """Discount factor; 0: each decision is a contextual bandit (a slot's next observation is an
    unrelated sample), see docs/decision_process.md."""
    entropy_coeff: float = ruled(NON_NEGATIVE, 0.01)
    """Entropy bonus."""
    hidden_sizes: list[int] = ruled(COUNT, factory=lambda: [64, 64])
    """MLP hidden layers of the policy and value networks."""
    policy_head: str = ruled(one_of("joint", "factorised"), "joint")
    """``joint``: 16 free logits, one per level subset; ``factorised``: one logit per level, the
    subset's logit their sum over its levels (independent Bernoulli choices per level, so what is
    learnt about a level is shared by the 8 subsets holding it); see policies/level_policy_module."""
    num_env_runners: int = ruled(NON_NEGATIVE, 0)
    """RLlib env runners (0 = sample in the driver; needed on 2 CPUs)."""
    num_learners: int = ruled(NON_NEGATIVE, 0)
    """RLlib learner workers (0 = learn in the driver)."""
    num_gpus_per_learner: float = ruled(NON_NEGATIVE, 0.0)
    """GPUs per RLlib learner."""
    greedy: bool = ruled(ANY, True)
    """Phase 3: the frozen policy takes its most likely subset (False: samples from it)."""
    static_baselines: list[str] = ruled(
        ANY, factory=lambda: ["P2"]
    )  # level specs: experiments.validation
    """Phase 3 static-subset baselines (default: the best single level of the ablation)."""


@dataclass
class MetaConfig:
    """MAML-style warm start: first-order meta-learning (Reptile) of the policy's weights."""

    warm_start: str = ruled(ANY, "")  # a readable checkpoint: experiments.cli
    """Path of a meta-checkpoint to load before PPO ('' = start from scratch)."""
    regimes: list[str] = ruled(
        ANY, factory=lambda: ["small", "large", "mixed"]
    )  # registry names: experiments.validation
    """Embedded-dataset regimes of the task distribution."""
    lambdas: list[float] = ruled(NON_NEGATIVE, factory=lambda: [0.1, 0.5, 1.0])
    """λ values of the task distribution."""
    student_depths: list[int] = ruled(
        ANY, factory=lambda: [18]
    )  # registry names: experiments.validation
    """Student ResNet depths of the task distribution."""
    meta_iterations: int = ruled(COUNT, 4)
    """Outer Reptile iterations (one sampled task each)."""
    inner_iterations: int = ruled(COUNT, 2)
    """PPO iterations on a task per outer iteration."""
    meta_lr: float = ruled(Rule(lambda v: 0 < v <= 1, "in (0, 1]"), 0.5)
    """Reptile step size ε: θ ← θ + ε (θ_task − θ)."""
    compare_scratch: bool = ruled(ANY, True)
    """With a warm start, also train a scratch policy to report the warm-vs-scratch curves."""


@dataclass
class SearchConfig:
    """NAS baselines that pick one static level subset (DESIGN §7, ``scripts/search_nas.py``).

    A search never sees the val split: it trains on part of the training split and scores on the
    rest (``holdout_fraction``). The chosen subset is then retrained on ``student_schedule``.
    """

    lam: float = ruled(NON_NEGATIVE, 0.0)
    """FLOPs penalty of every method's objective: score = AP - lam * kd_flops(S) / kd_flops(all).
    DARTS adds lam * sum_l gate_l * c_l with c_l = kd_flops({l}) / sum_k kd_flops({k}); GDAS adds
    lam * kd_flops(sampled S) / kd_flops(all)."""
    holdout_fraction: float = ruled(Rule(lambda v: 0 < v < 1, "in (0, 1)"), 0.25)
    """Fraction of the training split held out as the search's validation set."""
    fitness_epochs: int = ruled(COUNT, 1)
    """Epochs of one fitness run (evolution, random, exhaustive) on the search-train part."""
    gradient_steps: int = ruled(COUNT, 100)
    """DARTS/GDAS: alternating student / architecture updates."""
    alpha_lr: float = ruled(POSITIVE, 0.05)
    """DARTS/GDAS: Adam learning rate of the architecture logits."""
    unrolled_lr: float = ruled(NON_NEGATIVE, 0.0)
    """DARTS/GDAS: xi of the virtual step w' = w - xi * grad_w L_train (0: the student's lr)."""
    finite_difference_eps: float = ruled(POSITIVE, 0.01)
    """DARTS/GDAS: epsilon of the finite-difference Hessian-vector product (DARTS eq. 8)."""
    gate_threshold: float = ruled(FRACTION, 0.5)
    """DARTS keeps the levels whose gate sigmoid(alpha_l) ends above this."""
    tau_max: float = ruled(POSITIVE, 10.0)
    """GDAS: Gumbel-softmax temperature at the first step."""
    tau_min: float = ruled(POSITIVE, 0.1)
    """GDAS: temperature at the last step (annealed linearly)."""
    population: int = ruled(COUNT, 4)
    """Evolution: population size."""
    sample_size: int = ruled(COUNT, 2)
    """Evolution: tournament size (candidates sampled per cycle)."""
    cycles: int = ruled(NON_NEGATIVE, 6)
    """Evolution: children evaluated after the initial population."""
    random_samples: int = ruled(COUNT, 6)
    """Random search: subsets drawn (with replacement; repeats are not retrained)."""


@dataclass
class SweepConfig:
    """``scripts/sweep.py``: one Ray Tune experiment over RL lambdas, NAS methods, the static grid
    and baselines, each over seeds (DESIGN §8)."""

    seeds: list[int] = ruled(NON_NEGATIVE, factory=lambda: [0, 1])
    """Seeds of every trial kind (student seed; for RL also the policy-learning seed)."""
    rl_lams: list[float] = ruled(NON_NEGATIVE, factory=lambda: [0.05, 0.1, 0.3])
    """lambda values of the RL trials (the RL Pareto front); empty for no RL trials."""
    nas_methods: list[str] = ruled(
        ANY, factory=lambda: ["darts", "gdas", "evolution", "random", "exhaustive"]
    )  # registry names: experiments.validation
    """Search methods (``rlpkd.search.methods.SEARCH_METHODS``) run as trials."""
    static_grid: bool = ruled(ANY, True)
    """Train all 16 static subsets (the exhaustive grid and static Pareto front)."""
    baselines: list[str] = ruled(ANY, factory=list)  # level specs: experiments.validation
    """Extra level specs run as trials, e.g. 'random:0.5' or 'P2,P3'."""
    trial_cpus: float = ruled(POSITIVE, 1.0)
    """CPUs reserved per trial."""
    trial_gpus: float = ruled(NON_NEGATIVE, 0.0)
    """GPUs per trial; fractions share a GPU (0.25: four trials per GPU)."""
    trial_threads: int = ruled(COUNT, 1)
    """torch CPU threads inside a trial."""
    max_concurrent_trials: int = ruled(NON_NEGATIVE, 0)
    """At most this many trials at once (0: as resources allow)."""
    scheduler: str = ruled(one_of("fifo", "asha"), "fifo")
    """'fifo' or 'asha' (ASHA stops RL trials early on the PPO return; others are unaffected)."""
    asha_grace_period: int = ruled(COUNT, 2)
    """ASHA: PPO iterations before a trial can be stopped."""
    asha_reduction_factor: int = ruled(at_least(2), 2)
    """ASHA: 1/reduction_factor of the trials go on at each rung."""


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    out: str = ruled(NON_EMPTY, "runs/default")
    """Run directory (DESIGN §11)."""
    device: str = ruled(
        matching(r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:N'"), "auto"
    )
    """'auto' (CUDA if available), 'cpu' or 'cuda[:N]'."""
    seed: int = ruled(NON_NEGATIVE, 0)
    """Seed of the teacher and of a single student run."""
    num_threads: int = ruled(NON_NEGATIVE, 0)
    """torch CPU threads (0 = torch's default)."""
    amp: bool = ruled(ANY, True)
    """bf16 autocast on CUDA (ignored on CPU)."""
    channels_last: bool = ruled(ANY, True)
    """channels_last memory format on CUDA (ignored on CPU)."""
    progress: bool = ruled(ANY, True)
    """Show tqdm progress bars."""
    student_workers: int = ruled(COUNT, 1)
    """Phase-3 students of ``train_rl`` trained at once, each in its own process with
    ``num_threads`` split between them (``experiments/student_workers.py``); 1: one at a time in
    the main process."""
    teacher_cache_gb: float = ruled(NON_NEGATIVE, 0.0)
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


FIELD_RULES: dict[type, dict[str, Rule]] = {
    section: {item.name: item.metadata[RULE_KEY] for item in dataclasses.fields(section)}
    for section in (
        DataConfig,
        ModelConfig,
        ScheduleConfig,
        DistillConfig,
        EvalConfig,
        ExperimentConfig,
        RLConfig,
        MetaConfig,
        SearchConfig,
        SweepConfig,
        RuntimeConfig,
    )
}
"""The allowed values of every field of every section (a list field: of each item). Every float
anywhere must also be finite. Registry names (KD losses, search methods, level specs, regimes,
ResNet depths) live above this layer and are checked by ``experiments.validation``."""
