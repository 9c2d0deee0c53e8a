"""Datasets from a config: the embedded generator's cache or real COCO on disk."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rlpkd.config import DataConfig
from rlpkd.data.coco import CocoDetectionDataset
from rlpkd.data.embedded import ensure_embedded_dataset
from rlpkd.errors import ConfigError

__all__ = [
    "DetectionDatasets",
    "build_datasets",
    "dataset_paths",
    "heldout_split",
    "print_ground_truth_note",
]


@dataclass
class DetectionDatasets:
    """The training and validation splits of one experiment."""

    train: CocoDetectionDataset
    val: CocoDetectionDataset

    @property
    def num_classes(self) -> int:
        """Number of object classes."""
        return self.train.num_classes


def dataset_paths(data: DataConfig, progress: bool = True) -> tuple[Path, Path, Path, Path]:
    """(train images, train annotations, val images, val annotations); generates embedded data."""
    if data.source == "embedded":
        root = ensure_embedded_dataset(
            Path(data.root),
            data.num_train,
            data.num_val,
            data.image_size,
            data.seed,
            data.regime,
            progress=progress,
        )
        return (
            root / "images" / "train",
            root / "annotations" / "train.json",
            root / "images" / "val",
            root / "annotations" / "val.json",
        )
    missing = [
        key
        for key in ("train_images", "train_annotations", "val_images", "val_annotations")
        if not getattr(data, key)
    ]
    if missing:
        raise ConfigError(f"data.source is 'coco' but data.{missing[0]} is not set")
    return (
        Path(data.train_images),
        Path(data.train_annotations),
        Path(data.val_images),
        Path(data.val_annotations),
    )


# Annotation files whose note this process has printed (env runners build datasets repeatedly).
_NOTED: set[Path] = set()


def print_ground_truth_note(dataset: CocoDetectionDataset) -> str | None:
    """Print the split's ``note: …`` line (boxes not trained on) to stderr once per process.

    Returns:
        The note, or None when every box of the file is trained on as given.
    """
    note = dataset.ground_truth_report.note(str(dataset.annotation_file))
    key = dataset.annotation_file.resolve()
    if note is not None and key not in _NOTED:
        _NOTED.add(key)
        print(note, file=sys.stderr, flush=True)
    return note


def build_datasets(data: DataConfig, progress: bool = True) -> DetectionDatasets:
    """Both splits, validated (bad annotation files, missing files and, with ``data.preload``,
    corrupt images raise DataError).

    For each split whose boxes are not all trained on as given (crowd boxes, boxes under 1 px,
    boxes past their image) one ``note: …`` line goes to stderr, whatever ``progress`` says.
    """
    train_images, train_annotations, val_images, val_annotations = dataset_paths(data, progress)
    train = CocoDetectionDataset(
        train_images,
        train_annotations,
        data.image_size,
        train=True,
        hflip_prob=data.hflip_prob,
        preload=data.preload,
    )
    val = CocoDetectionDataset(
        val_images, val_annotations, data.image_size, train=False, preload=data.preload
    )
    if train.category_ids != val.category_ids:
        raise ConfigError(
            f"{train_annotations} and {val_annotations} have different categories; "
            "both splits must share one category list"
        )
    for dataset in (train, val):
        print_ground_truth_note(dataset)
    return DetectionDatasets(train=train, val=val)


def heldout_split(
    datasets: DetectionDatasets, holdout_fraction: float, seed: int
) -> DetectionDatasets:
    """Split the *training* split into a train part (flips on) and a held-out part (``val``).

    Searches score candidates on the held-out part and the level-value signal measures its
    detection loss there, so the val split that reports the final numbers is never used to
    choose anything. The split is a seeded permutation (``search.holdout_fraction``).
    """
    train = datasets.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    holdout = max(1, round(holdout_fraction * len(train)))
    if holdout >= len(train):
        raise ValueError(f"holdout of {holdout} leaves no search-train images of {len(train)}")
    return DetectionDatasets(
        train=train.subset(sorted(order[holdout:]), train=True),
        val=train.subset(sorted(order[:holdout]), train=False),
    )
