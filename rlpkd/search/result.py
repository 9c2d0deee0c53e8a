"""What every search method returns: the chosen subset, what the search cost, and its trace."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rlpkd.levels import format_levels

__all__ = ["SearchCost", "SearchResult"]


@dataclass
class SearchCost:
    """The compute a search spent (its retraining of the chosen subset is not included)."""

    wall_time_s: float = 0.0
    """Device seconds spent searching (CPU- or GPU-seconds, see ``device``)."""
    device: str = "cpu"
    """Where the search ran ('cpu' or 'cuda')."""
    kd_gflops: float = 0.0
    """Teacher + KD GFLOPs spent in total (not per image), from the FLOPs model."""
    student_images: int = 0
    """Student training images processed (forward + backward passes)."""
    evaluations: int = 0
    """Candidate subsets trained (fitness methods) or search steps (gradient methods)."""

    def add(self, other: SearchCost) -> None:
        """Accumulate another piece of work into this one."""
        self.wall_time_s += other.wall_time_s
        self.kd_gflops += other.kd_gflops
        self.student_images += other.student_images
        self.evaluations += other.evaluations


@dataclass
class SearchResult:
    """A search method's pick and what it took to find it.

    Attributes:
        method: the registered method name ('darts', 'gdas', 'evolution', 'random', 'exhaustive').
        levels: the chosen static subset, in LEVELS order (may be empty: no KD).
        cost: the search's compute.
        trace: one dict per step / evaluation, in order (for plots and the report).
        scores: fitness of every subset the search evaluated, keyed by ``format_levels``.
    """

    method: str
    levels: tuple[str, ...]
    cost: SearchCost
    trace: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def levels_name(self) -> str:
        """The pick as 'none' / 'all' / 'P2,P4'."""
        return format_levels(self.levels)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``levels`` as a list, plus ``levels_name``)."""
        values = asdict(self)
        values["levels"] = list(self.levels)
        values["levels_name"] = self.levels_name
        return values
