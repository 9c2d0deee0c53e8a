"""One image of the embedded dataset: a textured background, clutter, and shapes whose sizes
follow a COCO size-band mix (``rlpkd.data.synthetic`` draws the splits from these).

Everything is drawn from the ``numpy`` generator it is given, so one generator state gives one
image, pixel for pixel.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from rlpkd.data.size_bins import COCO_AREA_EDGES, SIZE_BINS, size_bin

__all__ = ["EMBEDDED_CLASS_NAMES", "band_edges", "draw_image"]

EMBEDDED_CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "star")

MAX_OBJECTS = 6
# A later (smaller) object may hide at most this fraction of an earlier object's box in total.
MAX_HIDDEN_FRACTION = 0.3
MIN_COLOR_DISTANCE = 90.0
_MAX_SHAPE_REDRAWS = 1000


def band_edges(size: int) -> list[tuple[float, float]]:
    """The (small, medium, large) object-side bands at image side ``size``, in pixels.

    A band may be empty (hi <= lo) for small images.
    """
    min_side = max(4.0, 0.05 * size)
    max_side = 0.88 * size
    small_side, large_side = (math.sqrt(area) for area in COCO_AREA_EDGES)
    edges = [(min_side, small_side), (small_side, large_side), (large_side, max_side)]
    return [(lo, min(hi, max_side)) for lo, hi in edges]


def draw_image(
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
    bands = band_edges(size)
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
