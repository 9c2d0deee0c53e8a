"""A per-image selector from a table: each image distils the level subset of its scale regime.

The headroom report's *oracle* (``experiments/headroom.py``): with the best static subset of each
regime (small-only, medium-only, large-only images of the ``per-image`` embedded data) it is the
per-sample policy that knows each image's regime and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from rlpkd.data.batch import DetectionBatch
from rlpkd.errors import ConfigError
from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import NUM_LEVELS, format_levels, levels_to_mask, parse_levels

__all__ = ["RegimeTableLevels", "REGIME_TABLE", "regime_table_from_headroom"]

REGIME_TABLE = "regime-table"


class RegimeTableLevels:
    """Each image distils ``table[regime of the image]``.

    Args:
        table: regime -> level subset (e.g. ``{"small-only": ("P2",), ...}``).
        image_regimes: image id -> regime, for every image the selector will see (e.g.
            ``rlpkd.data.synthetic.image_regimes`` of the training annotation file).
        name: the method's name in reports.

    Raises:
        ValueError: a regime of ``image_regimes`` has no entry in ``table``.
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[str]],
        image_regimes: Mapping[int, str],
        name: str = REGIME_TABLE,
    ) -> None:
        self.table = {regime: tuple(levels) for regime, levels in sorted(table.items())}
        missing = sorted(set(image_regimes.values()) - set(self.table))
        if missing:
            raise ValueError(f"no level subset for regime(s) {', '.join(missing)}")
        self.name = name
        self.image_regimes = {int(i): r for i, r in image_regimes.items()}
        self._masks = {regime: levels_to_mask(levels) for regime, levels in self.table.items()}
        entries = ";".join(f"{r}={format_levels(levels)}" for r, levels in self.table.items())
        # the id -> regime map is fixed by the data, which a student's fingerprint already holds
        self.fingerprint = f"{REGIME_TABLE}:{entries}"

    def select(self, batch: DetectionBatch, progress: float) -> torch.Tensor:
        """[B, 4]: row i is the subset of image i's regime.

        Raises:
            KeyError: an image id the selector was not given a regime for.
        """
        rows = []
        for image_id in batch.image_ids.tolist():
            try:
                rows.append(self._masks[self.image_regimes[int(image_id)]])
            except KeyError:
                raise KeyError(f"image {image_id} has no regime in the selector's map") from None
        if not rows:
            return torch.zeros(0, NUM_LEVELS, dtype=torch.bool)
        return torch.stack(rows)

    def mean_kd_gflops(self, flops: FlopsModel) -> float:
        """kd GFLOPs per image averaged over the images of the map (each image its regime's
        subset): what a run over those images costs per image, up to the batches it drops."""
        if not self.image_regimes:
            return 0.0
        costs = [flops.kd_gflops(self.table[r]) for r in self.image_regimes.values()]
        return sum(costs) / len(costs)


def regime_table_from_headroom(path: Path, key: str = "experiment.headroom_report") -> dict:
    """The oracle's table of a headroom report: regime -> its best static subset, read from the
    ``best_subset_by_regime`` of ``headroom.json`` (``scripts/headroom.py``).

    Raises:
        ConfigError: the file (named, with the config ``key`` that gave it) is missing, not
            JSON, has no ``best_subset_by_regime`` or holds a subset that is not a level list.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist (a headroom.json of scripts/headroom.py)")
    try:
        report = json.loads(path.read_text())
        entries = report["best_subset_by_regime"]
        table = {str(regime): parse_levels(entry["levels"]) for regime, entry in entries.items()}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{key}: {path} is not JSON ({error})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"{key}: {path} has no readable 'best_subset_by_regime' "
            f"({type(error).__name__}: {error}); is it a headroom.json of scripts/headroom.py?"
        ) from None
    if not table:
        raise ConfigError(f"{key}: {path} has an empty 'best_subset_by_regime'")
    return table
