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
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from rlpkd.atomic_files import atomic_write_text
from rlpkd.data.size_bins import COCO_AREA_EDGES, SIZE_BINS, size_bin
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

EMBEDDED_CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "star")

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

MAX_OBJECTS = 6
# A later (smaller) object may hide at most this fraction of an earlier object's box in total.
MAX_HIDDEN_FRACTION = 0.3
MIN_COLOR_DISTANCE = 90.0
_SPLITS = ("train", "val")
_MAX_SHAPE_REDRAWS = 1000


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


def _band_edges(size: int) -> list[tuple[float, float]]:
    """The (small, medium, large) object-side bands at image side ``size``, in pixels.

    A band may be empty (hi <= lo) for small images.
    """
    min_side = max(4.0, 0.05 * size)
    max_side = 0.88 * size
    small_side, large_side = (math.sqrt(area) for area in COCO_AREA_EDGES)
    edges = [(min_side, small_side), (small_side, large_side), (large_side, max_side)]
    return [(lo, min(hi, max_side)) for lo, hi in edges]


def _fits(band_probs: tuple[float, float, float], size: int) -> bool:
    """True when some band with positive probability is non-empty at image side ``size``."""
    return any(p > 0 and hi > lo for p, (lo, hi) in zip(band_probs, _band_edges(size), strict=True))


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
        image, objects = _draw_image(rng, size, band_probs)
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


# --------------------------------------------------------------------------- one image


def _draw_image(
    rng: np.random.Generator, size: int, band_probs: tuple[float, float, float]
) -> tuple[Image.Image, list[tuple[int, tuple[int, int, int, int]]]]:
    """One image and its objects as (class index, (x, y, w, h)) in pixels."""
    canvas = _background(rng, size)
    image = Image.fromarray(canvas)
    _draw_clutter(rng, image, size)
    boxes = _place_boxes(rng, size, band_probs)
    objects = []
    # Largest first: a smaller object drawn later can only hide a bounded part of a larger one.
    for x, y, w, h in boxes:
        category_index = int(rng.integers(len(EMBEDDED_CLASS_NAMES)))
        mask = _shape_mask(rng, EMBEDDED_CLASS_NAMES[category_index], w, h)
        region = np.asarray(image.crop((x, y, x + w, y + h)), dtype=np.float32)
        color = _contrasting_color(rng, region.reshape(-1, 3).mean(axis=0))
        texture = _texture(rng, color, w, h)
        image.paste(texture, (x, y), mask)
        objects.append((category_index, (x, y, w, h)))
    return image, objects


def _sample_side(
    rng: np.random.Generator, size: int, band_probs: tuple[float, float, float]
) -> float:
    """An object side length: pick a COCO size band, then log-uniform within it."""
    bands = _band_edges(size)
    probs = np.array([p if hi > lo else 0.0 for p, (lo, hi) in zip(band_probs, bands, strict=True)])
    lo, hi = bands[int(rng.choice(3, p=probs / probs.sum()))]
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _sample_shape(
    rng: np.random.Generator, size: int, band_probs: tuple[float, float, float]
) -> tuple[int, int]:
    """A box's (w, h) in whole pixels: a side from ``_sample_side`` and an aspect ratio."""
    side = _sample_side(rng, size, band_probs)
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    w = int(round(min(max(side * math.sqrt(aspect), 4), size - 2)))
    h = int(round(min(max(side / math.sqrt(aspect), 4), size - 2)))
    return w, h


def _place_boxes(
    rng: np.random.Generator, size: int, band_probs: tuple[float, float, float]
) -> list[tuple[int, int, int, int]]:
    """Up to 6 boxes fully inside the image with limited overlap, sorted largest first."""
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    only_bin = SIZE_BINS[band_probs.index(1.0)] if 1.0 in band_probs else None
    shapes = []
    for _ in range(num_objects):
        w, h = _sample_shape(rng, size, band_probs)
        # A single-band regime keeps every box in its COCO area bin: rounding and the aspect
        # ratio can move a box whose side is near a band edge across it (about 1 in 400).
        for _ in range(_MAX_SHAPE_REDRAWS):
            if only_bin is None or size_bin(w * h) == only_bin:
                break
            w, h = _sample_shape(rng, size, band_probs)
        else:
            raise RuntimeError(f"no {only_bin} box found for a {size}px image")
        shapes.append((w, h))
    shapes.sort(key=lambda wh: wh[0] * wh[1], reverse=True)
    placed: list[tuple[int, int, int, int]] = []
    hidden: list[float] = []
    for w, h in shapes:
        for _ in range(20):
            x = int(rng.integers(1, size - w))
            y = int(rng.integers(1, size - h))
            overlaps = [_intersection((x, y, w, h), box) for box in placed]
            new_hidden = [done + overlap for done, overlap in zip(hidden, overlaps, strict=True)]
            if all(
                area <= MAX_HIDDEN_FRACTION * box[2] * box[3]
                for area, box in zip(new_hidden, placed, strict=True)
            ):
                hidden = new_hidden
                placed.append((x, y, w, h))
                hidden.append(0.0)
                break
    return placed


def _intersection(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return float(max(iw, 0) * max(ih, 0))


# --------------------------------------------------------------------------- appearance


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _contrasting_color(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour far enough from the local background mean that the object stays visible."""
    best, best_distance = _random_color(rng), -1.0
    for _ in range(10):
        color = _random_color(rng)
        distance = float(np.linalg.norm(color - background))
        if distance >= MIN_COLOR_DISTANCE:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A [size, size, 3] uint8 background: gradient, blotchy noise or low-contrast stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.integers(3))
    base = _random_color(rng)
    if kind == 0:
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / (t.max() - t.min())
        canvas = base + (_random_color(rng) - base) * t[..., None]
    elif kind == 1:
        cells = int(rng.integers(3, 9))
        coarse = rng.normal(0, 35, size=(cells, cells, 3)).astype(np.float32)
        blotches = np.stack(
            [
                np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR))
                for c in range(3)
            ],
            axis=-1,
        )
        canvas = base + blotches
    else:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 20) / size
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        canvas = base + rng.uniform(10, 25) * np.sign(np.sin(2 * math.pi * phase))[..., None]
    canvas = canvas + rng.normal(0, 5, size=canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, color: np.ndarray, w: int, h: int) -> Image.Image:
    """A w×h RGB patch: ``color`` modulated by stripes, a checkerboard or noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(3, 8)
        pattern = np.sign(
            np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        )
    elif kind == 1:
        cell = int(rng.integers(2, 7))
        pattern = ((xx // cell + yy // cell) % 2) * 2 - 1
    else:
        pattern = np.clip(rng.normal(0, 0.6, size=(h, w)), -1, 1)
    amplitude = rng.uniform(15, 40)
    patch = color + amplitude * pattern[..., None]
    return Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8))


def _draw_clutter(rng: np.random.Generator, image: Image.Image, size: int) -> None:
    """Unannotated thin strokes, arcs and dots: texture a detector must learn to ignore."""
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 11))):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = (float(v) for v in rng.uniform(0, size, size=2))
        kind = int(rng.integers(3))
        if kind == 0:
            length, angle = rng.uniform(5, 0.2 * size), rng.uniform(0, 2 * math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=color, width=int(rng.integers(1, 3)))
        elif kind == 1:
            radius = rng.uniform(4, 0.1 * size)
            start = float(rng.uniform(0, 360))
            box = [x - radius, y - radius, x + radius, y + radius]
            draw.arc(box, start, start + float(rng.uniform(60, 200)), fill=color, width=1)
        else:
            radius = float(rng.uniform(0.5, 1.5))
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)


# --------------------------------------------------------------------------- shapes


def _shape_mask(rng: np.random.Generator, name: str, w: int, h: int) -> Image.Image:
    """An 'L' mask of size w×h whose shape touches all four sides (so the box is tight)."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    right, bottom = w - 1, h - 1
    if name == "circle":
        draw.ellipse([0, 0, right, bottom], fill=255)
    elif name == "square":
        draw.rectangle([0, 0, right, bottom], fill=255)
    elif name == "ring":
        draw.ellipse([0, 0, right, bottom], fill=255)
        thickness = rng.uniform(0.22, 0.35)
        draw.ellipse(
            [thickness * w, thickness * h, right - thickness * w, bottom - thickness * h], fill=0
        )
    elif name == "cross":
        arm = rng.uniform(0.28, 0.4)
        x0, x1 = (0.5 - arm / 2) * right, (0.5 + arm / 2) * right
        y0, y1 = (0.5 - arm / 2) * bottom, (0.5 + arm / 2) * bottom
        draw.rectangle([x0, 0, x1, bottom], fill=255)
        draw.rectangle([0, y0, right, y1], fill=255)
    elif name == "triangle":
        angles = np.array([90.0, 210.0, 330.0]) + rng.uniform(0, 360)
        draw.polygon(_fit_polygon(np.ones(3), angles, right, bottom), fill=255)
    elif name == "star":
        angles = np.arange(10) * 36.0 + rng.uniform(0, 360)
        radii = np.tile([1.0, rng.uniform(0.4, 0.5)], 5)
        draw.polygon(_fit_polygon(radii, angles, right, bottom), fill=255)
    else:
        raise ValueError(f"unknown shape {name!r}")
    return mask


def _fit_polygon(
    radii: np.ndarray, angles_deg: np.ndarray, right: float, bottom: float
) -> list[tuple[float, float]]:
    """Polar vertices stretched so their bounding box is exactly [0, right] × [0, bottom]."""
    angles = np.deg2rad(angles_deg)
    xs, ys = radii * np.cos(angles), radii * np.sin(angles)
    xs = (xs - xs.min()) / (xs.max() - xs.min()) * right
    ys = (ys - ys.min()) / (ys.max() - ys.min()) * bottom
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
