"""A procedurally generated COCO-format detection dataset that trains in minutes on a CPU.

Six shape classes, each a filled, textured shape on a varied background, with unannotated
clutter. Object sizes span COCO's small / medium / large bins (by box area against 32² and 96²),
so different samples need different pyramid levels. ``regime`` skews the size mix, which gives
the meta-learner a task distribution (DESIGN.md §6).

Two kinds of regime: a *size mix* (``mixed``, ``small``, ``large``, and the single-band
``small-only``, ``medium-only``, ``large-only``) draws each *object's* size band from the mix, so
most images hold objects of several sizes; ``per-image`` first draws one single-band regime per
*image* (uniformly among ``small-only``, ``medium-only`` and ``large-only``), so an image's objects
all fall in one COCO size band and different images need different pyramid levels (DESIGN §5,
"Where choice can matter"). A ``per-image`` dataset records each image's regime in an
``rlpkd_regime`` field of its image entry and the counts in ``info.image_regimes``;
``image_regimes`` reads the image id -> regime map of any embedded annotation file.

Generation is deterministic: image ``i`` of a split is drawn from ``numpy.random.default_rng
((seed, split, i))``, so it does not depend on how many images the split has, and the same
arguments give byte-identical PNGs and JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rlpkd.atomic_files import atomic_write_text
from rlpkd.data.size_bins import SIZE_BINS, size_bin
from rlpkd.data.synthetic_image import EMBEDDED_CLASS_NAMES, band_edges, draw_image
from rlpkd.errors import ConfigError, DataError

__all__ = [
    "EMBEDDED_CLASS_NAMES",
    "SIZE_MIXES",
    "PER_IMAGE",
    "PER_IMAGE_CHOICES",
    "REGIMES",
    "GENERATOR_VERSION",
    "generate_embedded_dataset",
    "image_regimes",
    "object_size_counts",
]


# Probability of drawing an object from COCO's (small, medium, large) side bands, per size mix.
SIZE_MIXES: dict[str, tuple[float, float, float]] = {
    "mixed": (0.40, 0.35, 0.25),
    "small": (0.80, 0.15, 0.05),
    "large": (0.10, 0.40, 0.50),
    "small-only": (1.0, 0.0, 0.0),
    "medium-only": (0.0, 1.0, 0.0),
    "large-only": (0.0, 0.0, 1.0),
}

# The regime that draws one single-band size mix per image, and the mixes it draws from.
PER_IMAGE = "per-image"
PER_IMAGE_CHOICES: tuple[str, ...] = ("small-only", "medium-only", "large-only")

# Every valid ``regime`` name (``data.regime``, ``meta.regimes``, ``make_dataset.py --regime``).
REGIMES: tuple[str, ...] = (*SIZE_MIXES, PER_IMAGE)

# Bump when the generator's output changes, so cached datasets are not silently reused.
# (Adding regimes left the output of the existing ones byte-identical: still 1.)
GENERATOR_VERSION = 1

_SPLITS = ("train", "val")


def generate_embedded_dataset(
    out_dir: Path,
    num_train: int,
    num_val: int,
    size: int,
    seed: int,
    regime: str = "mixed",
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset to ``out_dir`` and return ``out_dir``.

    Layout: ``images/{train,val}/NNNNNN.png`` (RGB, ``size``×``size``) and
    ``annotations/{train,val}.json`` (COCO format; ``area`` is the box area w·h). The JSON files
    are written last and atomically, so a dataset without both of them is incomplete.
    Image ids are 1..num_train for train and num_train+1.. for val (disjoint, as in COCO).

    With ``regime="per-image"`` each image first draws its own single-band regime from its own
    generator (so image ``i`` does not depend on the others), among those of
    ``PER_IMAGE_CHOICES`` whose band fits the image (``large-only`` needs ``size`` >= 110); its
    image entry gets ``"rlpkd_regime"`` and ``info.image_regimes`` counts them.

    Raises:
        ConfigError: unknown ``regime``, a single-band regime whose band does not fit in
            ``size``, or non-positive sizes/counts.
    """
    _check_generation_args(regime, size, num_train, num_val)
    choices = [name for name in PER_IMAGE_CHOICES if _fits(SIZE_MIXES[name], size)]
    out_dir = Path(out_dir)
    counts = {"train": num_train, "val": num_val}
    first_id = {"train": 1, "val": num_train + 1}
    documents = {
        split: _draw_split(
            out_dir,
            split_index,
            counts[split],
            first_id[split],
            size,
            seed,
            regime,
            choices,
            progress,
        )
        for split_index, split in enumerate(_SPLITS)
    }
    annotation_dir = out_dir / "annotations"
    annotation_dir.mkdir(parents=True, exist_ok=True)
    for split in _SPLITS:
        # compact JSON, as generator version 1 always wrote it (write_json would indent)
        atomic_write_text(annotation_dir / f"{split}.json", json.dumps(documents[split]))
    return out_dir


def image_regimes(annotation_file: Path) -> dict[int, str]:
    """Image id -> the scale regime its objects were drawn from, for an embedded annotation file.

    A ``per-image`` dataset gives each image's own regime (``small-only``, ``medium-only`` or
    ``large-only``); any other embedded dataset gives every image the dataset's regime.

    Raises:
        DataError: the file is not an embedded dataset's (no ``info.regime``), or a
            ``per-image`` image entry has no ``rlpkd_regime``.
    """
    with open(annotation_file) as f:
        document = json.load(f)
    info = document.get("info") if isinstance(document, dict) else None
    regime = info.get("regime") if isinstance(info, dict) else None
    if regime not in REGIMES:
        raise DataError(
            f"{annotation_file}: no embedded-dataset regime in 'info.regime' "
            "(image regimes exist only for datasets made by rlpkd's generator)"
        )
    regimes = {}
    for image in document["images"]:
        image_regime = image.get("rlpkd_regime", regime) if regime == PER_IMAGE else regime
        if image_regime not in SIZE_MIXES:
            raise DataError(
                f"{annotation_file}: image {image.get('id')!r} has no valid 'rlpkd_regime' "
                f"(a per-image dataset needs one of {', '.join(PER_IMAGE_CHOICES)})"
            )
        regimes[int(image["id"])] = image_regime
    return regimes


def object_size_counts(annotation_file: Path) -> dict[str, int]:
    """Counts of images and of small / medium / large objects (COCO area bins) in a COCO file."""
    with open(annotation_file) as f:
        document = json.load(f)
    counts = {"images": len(document["images"]), "objects": 0, "small": 0, "medium": 0, "large": 0}
    for annotation in document["annotations"]:
        counts["objects"] += 1
        counts[size_bin(annotation["area"])] += 1
    return counts


def _fits(band_probs: tuple[float, float, float], size: int) -> bool:
    """True when some band with positive probability is non-empty at image side ``size``."""
    return any(p > 0 and hi > lo for p, (lo, hi) in zip(band_probs, band_edges(size), strict=True))


# --------------------------------------------------------------------------- one split


def _check_generation_args(regime: str, size: int, num_train: int, num_val: int) -> None:
    """Raise ConfigError for an unknown ``regime``, a single-band regime that does not fit in
    ``size``, or non-positive sizes/counts (as ``generate_embedded_dataset`` documents)."""
    if regime not in REGIMES:
        raise ConfigError(f"unknown dataset regime {regime!r}; valid: {', '.join(REGIMES)}")
    if size < 32:
        raise ConfigError(f"embedded dataset size {size} is too small; use at least 32")
    if regime in SIZE_MIXES and not _fits(SIZE_MIXES[regime], size):
        raise ConfigError(
            f"dataset regime {regime!r} draws only {SIZE_BINS[SIZE_MIXES[regime].index(1.0)]} "
            f"objects, which do not fit in {size}px images; use a larger size or another regime"
        )
    if num_train < 1 or num_val < 1:
        raise ConfigError(
            f"embedded dataset needs at least one train and one val image "
            f"(got num_train={num_train}, num_val={num_val})"
        )


def _draw_split(
    out_dir: Path,
    split_index: int,
    count: int,
    first_id: int,
    size: int,
    seed: int,
    regime: str,
    choices: list[str],
    progress: bool,
) -> dict:
    """Draw and save the ``count`` PNGs of split ``_SPLITS[split_index]``; returns its COCO
    document (info, images, annotations, categories)."""
    split = _SPLITS[split_index]
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    regime_counts = dict.fromkeys(choices, 0)
    indices = range(count)
    if progress:
        indices = tqdm(indices, desc=f"embedded {split}", unit="img")
    for index in indices:
        rng = np.random.default_rng((seed, split_index, index))
        entry: dict = {}
        if regime == PER_IMAGE:
            image_regime = choices[int(rng.integers(len(choices)))]
            regime_counts[image_regime] += 1
            band_probs = SIZE_MIXES[image_regime]
            entry["rlpkd_regime"] = image_regime
        else:
            band_probs = SIZE_MIXES[regime]
        image, objects = draw_image(rng, size, band_probs)
        image_id = first_id + index
        file_name = f"{index:06d}.png"
        image.save(image_dir / file_name, format="PNG")
        images.append(
            {"id": image_id, "file_name": file_name, "width": size, "height": size, **entry}
        )
        annotations += _object_annotations(objects, image_id, len(annotations) + 1)
    return {
        "info": _split_info(regime, seed, regime_counts),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(EMBEDDED_CLASS_NAMES)],
    }


def _object_annotations(
    objects: list[tuple[int, tuple[int, int, int, int]]], image_id: int, first_id: int
) -> list[dict]:
    """COCO annotation entries of one image's objects, numbered from ``first_id``."""
    return [
        {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": category_index + 1,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 0,
        }
        for k, (category_index, (x, y, w, h)) in enumerate(objects)
    ]


def _split_info(regime: str, seed: int, regime_counts: dict[str, int]) -> dict:
    """A split's ``info`` entry; a ``per-image`` one also counts the images of each regime."""
    info = {
        "description": "RL-PyramidKD embedded synthetic shapes",
        "regime": regime,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
    }
    if regime == PER_IMAGE:
        info["image_regimes"] = regime_counts
    return info
