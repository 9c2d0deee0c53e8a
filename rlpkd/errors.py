"""User-facing errors: one clear line (what, where, how to fix), never a traceback."""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "DivergenceError",
    "RunLockedError",
    "ResumeMismatchError",
    "ResourceError",
    "divergence_in",
]


class UserError(Exception):
    """An error caused by the user's input; scripts print its message and exit non-zero."""


class ConfigError(UserError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(UserError):
    """A dataset is missing or unreadable (annotation file, image file)."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, foreign or does not match the config."""


class DivergenceError(UserError):
    """Training produced a non-finite loss: the run stops, earlier results stay intact.

    Args:
        phase: which training phase diverged (e.g. 'teacher', 'student P2,P3 seed 0').
        step: the optimiser step (1-based) at which the loss was first non-finite.
        term: the loss term that was non-finite (e.g. 'detection', 'kd_P2').
        value: the offending value.
    """

    def __init__(self, phase: str, step: int, term: str, value: float) -> None:
        self.phase, self.step, self.term, self.value = phase, step, term, value
        super().__init__(
            f"training diverged in {phase} at step {step}: loss term '{term}' is {value} "
            "(lower the learning rate or check the annotations)"
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, str, float]]:
        # Ray and Tune pickle errors between processes: rebuild from the arguments, not the text.
        return type(self), (self.phase, self.step, self.term, self.value)


def divergence_in(error: BaseException) -> DivergenceError | None:
    """The DivergenceError ``error`` is or was caused by (RLlib wraps an env's error in a
    RuntimeError, Ray in a RayTaskError whose ``cause`` holds it), else None."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, DivergenceError):
            return current
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        pending += [current.__cause__, current.__context__]
        pending += [cause] if isinstance(cause, BaseException) else []
    return None


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


class ResumeMismatchError(UserError):
    """``--resume`` was given a config that differs from the one the run was started with."""


class ResourceError(UserError):
    """The requested compute resources cannot be met (GPUs on a CPU machine, too many CPUs)."""
