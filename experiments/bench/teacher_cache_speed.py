"""What the teacher cache saves: the all-level KD step with the lazy teacher and with the cache
answering (``rlpkd/models/teacher_cache.py``), side by side in one run."""

from __future__ import annotations

from experiments.bench.kd_step_speed import StepBenchSettings, build_kd_bench
from rlpkd.levels import LEVELS, levels_to_mask
from rlpkd.models.teacher_cache import TeacherFeatureCache

__all__ = ["benchmark_teacher_cache"]


def benchmark_teacher_cache(settings: StepBenchSettings) -> dict[str, float]:
    """ms per all-level KD step with the lazy teacher and with a filled teacher cache (same
    models, batch and optimiser), and their ratio (each timed over ``settings.steps`` calls after
    its warm-up; the cache is filled first)."""
    bench = build_kd_bench(settings)
    mask = levels_to_mask(LEVELS).expand(settings.batch_size, len(LEVELS)).clone()
    cache = TeacherFeatureCache(bench.teacher, max_gb=64.0)
    cache.pyramid(bench.batch.images, mask)

    lazy_s = settings.seconds_per_step(lambda: bench.kd_step(mask))
    cached_s = settings.seconds_per_step(lambda: bench.kd_step(mask, teacher_cache=cache))
    return {
        "lazy_teacher_ms": 1e3 * lazy_s,
        "cached_teacher_ms": 1e3 * cached_s,
        "cached_vs_lazy": cached_s / lazy_s,
    }
