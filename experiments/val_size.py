"""How many val images does a paired AP difference need? (issue 19: measured before the study)

Two methods' finished students of one run (``<run>/students/<method>-seed<s>``) are evaluated
once on a larger val set of the same embedded data (``data.num_val``: the training images and
the first val images are the same, every image is seeded by its own index). For each size n,
``draws`` random subsets of n val images score every student (COCOeval on those images only) and
give the paired difference ``a − b`` per seed. Two stds per n, in AP points:

- *evaluation noise*: the std over draws of the seed-mean difference (which val images were
  drawn): what more val images remove;
- *paired difference*: the mean over draws of the std across seeds of the per-seed difference
  (evaluation noise plus the students' run-to-run chaos, which no val set removes).

Writes ``<out>/val_size.{json,md}``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlpkd.atomic_files import atomic_write_text
from rlpkd.config import Config
from rlpkd.data.build import build_datasets
from rlpkd.evaluation.coco_eval import evaluate_coco
from rlpkd.evaluation.evaluate import evaluate_detector
from rlpkd.rundir import write_json
from rlpkd.training.checkpoints import load_detector_checkpoint

__all__ = ["val_size_study", "val_size_markdown"]


def _predictions(
    config: Config, run: Path, method: str, seeds: list[int], datasets, device: torch.device
) -> dict[int, list[dict]]:
    found = {}
    for seed in tqdm(seeds, desc=f"evaluate {method}", disable=not config.runtime.progress):
        path = run / "students" / f"{method}-seed{seed}" / "checkpoints" / "student.pt"
        model = load_detector_checkpoint(path, config, "student", datasets.num_classes)
        _, predictions = evaluate_detector(
            model.to(device), datasets.val, config.eval, device, config.runtime.amp, False
        )
        found[seed] = predictions
    return found


def val_size_study(
    config: Config,
    run: Path,
    methods: tuple[str, str],
    seeds: list[int],
    sizes: list[int],
    draws: int = 20,
) -> dict[str, Any]:
    """The two stds per val-set size (module docstring); ``config.data.num_val`` ≥ max(sizes)."""
    if max(sizes) > config.data.num_val:
        raise ValueError(f"sizes up to {max(sizes)} need data.num_val >= {max(sizes)}")
    device = torch.device("cpu")
    datasets = build_datasets(config.data, config.runtime.progress)
    coco, image_ids = datasets.val.coco, list(datasets.val.image_ids)
    first, second = (_predictions(config, run, m, seeds, datasets, device) for m in methods)
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        seed_means, seed_stds = [], []
        for _ in range(draws if size < len(image_ids) else 1):
            subset = [int(i) for i in rng.choice(image_ids, size=size, replace=False)]
            differences = [
                100 * evaluate_coco(coco, first[s], subset)["AP"]
                - 100 * evaluate_coco(coco, second[s], subset)["AP"]
                for s in seeds
            ]
            seed_means.append(statistics.fmean(differences))
            seed_stds.append(statistics.stdev(differences) if len(seeds) > 1 else float("nan"))
        rows.append(
            {
                "val_images": size,
                "draws": len(seed_means),
                "mean_difference": statistics.fmean(seed_means),
                "evaluation_noise_std": statistics.stdev(seed_means)
                if len(seed_means) > 1
                else 0.0,
                "paired_difference_std": statistics.fmean(seed_stds),
            }
        )
        print(f"val images {size}: {rows[-1]}", flush=True)
    return {"run": str(run), "methods": list(methods), "seeds": seeds, "rows": rows}


def val_size_markdown(record: dict[str, Any]) -> str:
    """The record as a table."""
    a, b = record["methods"]
    lines = [
        f"# Val images for a paired difference: {a} − {b}, seeds {record['seeds']}",
        "",
        "| val images | draws | mean difference (AP points) | evaluation noise std | paired "
        "difference std (across seeds) |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['val_images']} | {row['draws']} | {row['mean_difference']:+.2f} | "
            f"{row['evaluation_noise_std']:.2f} | {row['paired_difference_std']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_val_size(record: dict[str, Any], out: Path) -> None:
    """``<out>/val_size.{json,md}``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "val_size.json", record)
    atomic_write_text(out / "val_size.md", val_size_markdown(record))


__all__ += ["write_val_size"]
