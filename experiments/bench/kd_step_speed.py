"""Side-by-side speed of KD training steps (DESIGN §9): ours at several level sets vs torchvision.

Every timing in one report comes from the same process and inputs, so the ratios are meaningful;
achieved TFLOP/s = FLOPs (our FLOPs model; FlopCounterMode for torchvision's loop) / measured time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.bench.torchvision_fcos_kd import TorchvisionFCOSKDStep, build_torchvision_fcos
from rlpkd.config import DistillConfig, ModelConfig
from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.objective import DistillationObjective, ObjectiveTerms
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import LEVELS, format_levels, levels_to_mask
from rlpkd.models.detector import PyramidDetector, build_detector
from rlpkd.models.lazy_pyramid import freeze_teacher
from rlpkd.models.teacher_cache import TeacherFeatureCache
from rlpkd.training.kd_step import kd_training_step

__all__ = [
    "StepTiming",
    "StepBenchSettings",
    "KDBench",
    "build_kd_bench",
    "random_detection_batch",
    "time_steps",
    "benchmark_kd_steps",
]


@dataclass
class StepTiming:
    """One measured training step."""

    name: str
    step_ms: float
    images_per_s: float
    gflops_per_image: float
    achieved_tflops: float


def random_detection_batch(
    batch_size: int, image_size: int, num_classes: int, boxes_per_image: int, seed: int = 0
) -> DetectionBatch:
    """Random images with random boxes of all scales (for timing only)."""
    generator = torch.Generator().manual_seed(seed)
    sides = image_size * (
        0.05 + 0.8 * torch.rand(batch_size, boxes_per_image, 2, generator=generator)
    )
    corners = (image_size - sides) * torch.rand(batch_size, boxes_per_image, 2, generator=generator)
    return DetectionBatch(
        images=torch.rand(batch_size, 3, image_size, image_size, generator=generator),
        boxes=torch.cat([corners, corners + sides], dim=-1),
        labels=torch.randint(0, num_classes, (batch_size, boxes_per_image), generator=generator),
        image_ids=torch.arange(batch_size),
        scales=torch.ones(batch_size),
    )


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _synchronise(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronise(device)
    return (time.perf_counter() - start) / steps


@dataclass(frozen=True)
class StepBenchSettings:
    """What every step benchmark of one report shares: models, input, device and timing loop."""

    teacher_spec: ModelConfig
    """The frozen teacher's architecture."""
    student_spec: ModelConfig
    """The student's architecture."""
    image_size: int
    """Side of the square random images, in pixels."""
    batch_size: int
    """Images per step."""
    device: torch.device
    """Where the models and the batch live."""
    steps: int = 5
    """Timed calls of each step."""
    warmup: int = 2
    """Untimed calls before them."""
    num_classes: int = 80
    """Detection classes of the models and the random labels."""
    kd_loss: str = "mse"
    """The KD loss (``distill.loss``)."""

    def seconds_per_step(self, step: Callable[[], object]) -> float:
        """``time_steps`` of ``step`` with these settings' device, warmup and steps."""
        return time_steps(step, self.device, self.warmup, self.steps)


@dataclass
class KDBench:
    """The models, objective, optimiser and batch a step benchmark times."""

    teacher: PyramidDetector
    student: PyramidDetector
    objective: DistillationObjective
    optimizer: torch.optim.Optimizer
    batch: DetectionBatch
    thresholds: tuple[float, float, float]

    def kd_step(
        self,
        mask: torch.Tensor,
        amp: bool = False,
        teacher_cache: TeacherFeatureCache | None = None,
    ) -> ObjectiveTerms:
        """``kd_training_step`` of these models, objective, optimiser and batch at ``mask`` (no
        gradient clipping)."""
        return kd_training_step(
            self.student,
            self.teacher,
            self.objective,
            self.optimizer,
            self.batch,
            mask,
            0.0,
            amp,
            teacher_cache=teacher_cache,
        )


def build_kd_bench(settings: StepBenchSettings) -> KDBench:
    """A frozen teacher, a student, the KD objective, SGD and a random batch on the device."""
    image_size, num_classes, device = settings.image_size, settings.num_classes, settings.device
    thresholds = (image_size / 16, image_size / 8, image_size / 4)
    teacher = freeze_teacher(build_detector(settings.teacher_spec, num_classes, thresholds)).to(
        device
    )
    student = build_detector(settings.student_spec, num_classes, thresholds).to(device)
    objective = DistillationObjective(
        DistillConfig(loss=settings.kd_loss),
        settings.student_spec.fpn_channels,
        settings.teacher_spec.fpn_channels,
        num_classes,
    ).to(device)
    optimizer = torch.optim.SGD([*student.parameters(), *objective.kd.parameters()], lr=1e-4)
    batch = random_detection_batch(settings.batch_size, image_size, num_classes, 8).to(device)
    return KDBench(teacher, student, objective, optimizer, batch, thresholds)


def benchmark_kd_steps(
    settings: StepBenchSettings,
    amp: bool = True,
    channels_last: bool = True,
    level_sets: tuple[tuple[str, ...], ...] = (LEVELS, ("P4", "P5"), ()),
    with_torchvision: bool = True,
) -> dict:
    """Time one KD step per level set (and torchvision's FCOS KD loop); timings and ratios."""
    bench = build_kd_bench(settings)
    teacher, student, objective, batch = bench.teacher, bench.student, bench.objective, bench.batch
    device, batch_size, image_size = settings.device, settings.batch_size, settings.image_size
    if channels_last and device.type == "cuda":
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    flops = FlopsModel(teacher, student, objective.kd, image_size)
    use_amp = amp and device.type == "cuda"
    timings: list[StepTiming] = []
    for levels in level_sets:
        mask = levels_to_mask(levels).expand(batch_size, len(LEVELS)).clone()

        def step(mask=mask):
            bench.kd_step(mask, use_amp)

        seconds = settings.seconds_per_step(step)
        per_image = flops.student_train_flops() + flops.kd_flops(levels)
        timings.append(_timing(f"ours {format_levels(levels)}", seconds, batch_size, per_image))
    if with_torchvision:
        tv_student = build_torchvision_fcos(
            settings.student_spec.depth, settings.num_classes, image_size
        ).to(device)
        tv_teacher = build_torchvision_fcos(
            settings.teacher_spec.depth, settings.num_classes, image_size
        ).to(device)
        tv_step = TorchvisionFCOSKDStep(tv_student, tv_teacher)
        with FlopCounterMode(display=False) as counter:
            tv_step(batch)
        per_image = counter.get_total_flops() / batch_size

        def tv(batch=batch):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                tv_step(batch)

        seconds = settings.seconds_per_step(tv)
        timings.append(_timing("torchvision FCOS, all levels", seconds, batch_size, per_image))
    return {"timings": [asdict(t) for t in timings], "ratios": _ratios(timings, flops)}


def _timing(name: str, seconds: float, batch_size: int, flops_per_image: float) -> StepTiming:
    return StepTiming(
        name=name,
        step_ms=1e3 * seconds,
        images_per_s=batch_size / seconds,
        gflops_per_image=flops_per_image / 1e9,
        achieved_tflops=flops_per_image * batch_size / seconds / 1e12,
    )


def _ratios(timings: list[StepTiming], flops: FlopsModel) -> dict[str, float]:
    by_name = {t.name: t for t in timings}
    ratios: dict[str, float] = {}
    full, p45 = by_name.get("ours all"), by_name.get("ours P4,P5")
    if full and p45:
        measured = full.step_ms / p45.step_ms
        predicted = full.gflops_per_image / p45.gflops_per_image
        ratios["speedup_P4P5_vs_all_measured"] = measured
        ratios["speedup_P4P5_vs_all_predicted"] = predicted
        ratios["time_follows_flops"] = (measured - 1) / max(predicted - 1, 1e-12)
    tv = by_name.get("torchvision FCOS, all levels")
    if full and tv:
        ratios["ours_all_vs_torchvision_images_per_s"] = full.images_per_s / tv.images_per_s
    return ratios
