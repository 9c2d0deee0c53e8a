"""The embedded synthetic dataset: COCO validity, size coverage, determinism, regimes, cache, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from rlpkd.data import embedded
from rlpkd.data.embedded import embedded_dataset_dir, ensure_embedded_dataset
from rlpkd.data.synthetic import (
    EMBEDDED_CLASS_NAMES,
    REGIMES,
    generate_embedded_dataset,
    object_size_counts,
)
from rlpkd.errors import ConfigError, DataError
from tests.conftest import one_error_line, run_script


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed")
    return generate_embedded_dataset(out, num_train=60, num_val=10, size=128, seed=0)


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.mark.slow
def test_dataset_is_valid_coco_with_every_size_bin(mixed_dataset: Path) -> None:
    coco = load_coco(mixed_dataset / "annotations" / "train.json")
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(EMBEDDED_CLASS_NAMES)
    assert len(coco.imgs) == 60
    counts = object_size_counts(mixed_dataset / "annotations" / "train.json")
    assert counts["small"] > 0 and counts["medium"] > 0 and counts["large"] > 0
    objects_per_image = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert 1 <= min(objects_per_image) and max(objects_per_image) <= 6
    for annotation in coco.anns.values():
        x, y, w, h = annotation["bbox"]
        assert annotation["iscrowd"] == 0
        assert annotation["area"] == pytest.approx(w * h)
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w >= 4 and h >= 4


def test_split_image_ids_are_disjoint_and_files_exist(mixed_dataset: Path) -> None:
    train = load_coco(mixed_dataset / "annotations" / "train.json")
    val = load_coco(mixed_dataset / "annotations" / "val.json")
    assert not set(train.imgs) & set(val.imgs)
    for split, coco in (("train", train), ("val", val)):
        for info in coco.imgs.values():
            with Image.open(mixed_dataset / "images" / split / info["file_name"]) as image:
                assert image.mode == "RGB" and image.size == (128, 128)


def test_objects_stand_out_from_their_surroundings(mixed_dataset: Path) -> None:
    """An annotated box differs from the background just outside it (objects are visible)."""
    coco = load_coco(mixed_dataset / "annotations" / "train.json")
    differences = []
    for image_id, info in list(coco.imgs.items())[:20]:
        pixels = np.asarray(Image.open(mixed_dataset / "images" / "train" / info["file_name"]))
        for annotation in coco.imgToAnns[image_id]:
            x, y, w, h = (int(v) for v in annotation["bbox"])
            inside = pixels[y + h // 2, x + w // 2].astype(float)
            ring = np.concatenate(
                [pixels[max(y - 2, 0), x : x + w], pixels[y : y + h, max(x - 2, 0)]]
            )
            differences.append(np.abs(ring.astype(float).mean(0) - inside).sum())
    assert np.median(differences) > 40


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate_embedded_dataset(tmp_path / "a", 8, 2, 64, seed=3)
    second = generate_embedded_dataset(tmp_path / "b", 8, 2, 64, seed=3)
    other = generate_embedded_dataset(tmp_path / "c", 8, 2, 64, seed=4)
    for split in ("train", "val"):
        json_path = Path("annotations") / f"{split}.json"
        assert (first / json_path).read_bytes() == (second / json_path).read_bytes()
        assert (first / json_path).read_bytes() != (other / json_path).read_bytes()
    for png in sorted((first / "images").rglob("*.png")):
        assert png.read_bytes() == (second / png.relative_to(first)).read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_small_regime_has_more_small_objects_than_large_regime(tmp_path: Path) -> None:
    fractions = {}
    for regime in ("small", "large"):
        out = generate_embedded_dataset(tmp_path / regime, 40, 1, 128, seed=0, regime=regime)
        counts = object_size_counts(out / "annotations" / "train.json")
        fractions[regime] = counts["small"] / counts["objects"]
    assert fractions["small"] > 0.6
    assert fractions["large"] < 0.3


def test_unknown_regime_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        generate_embedded_dataset(tmp_path, 2, 1, 64, seed=0, regime="huge")
    for regime in REGIMES:
        assert regime in str(info.value)


def test_cache_generates_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ensure_embedded_dataset(tmp_path, 4, 2, 64, seed=1, regime="small", progress=False)
    assert path == embedded_dataset_dir(tmp_path, 4, 2, 64, 1, "small")
    assert "small" in path.name and "s64" in path.name and "seed1" in path.name
    assert (path / "annotations" / "val.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete cached dataset was regenerated")

    monkeypatch.setattr(embedded, "generate_embedded_dataset", fail)
    assert ensure_embedded_dataset(tmp_path, 4, 2, 64, 1, "small", progress=False) == path


def test_interrupted_generation_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(out_dir: Path, *args: object, **kwargs: object) -> None:
        (Path(out_dir) / "images").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "generate_embedded_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded_dataset(tmp_path, 4, 2, 64, seed=1, regime="mixed", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_cache_dir_is_reported(tmp_path: Path) -> None:
    stale = embedded_dataset_dir(tmp_path, 4, 2, 64, 1, "mixed")
    (stale / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="incomplete"):
        ensure_embedded_dataset(tmp_path, 4, 2, 64, seed=1, regime="mixed", progress=False)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_script("scripts/make_dataset.py", *args, timeout_s=120)


@pytest.mark.slow
def test_cli_bad_regime_prints_one_line_error(tmp_path: Path) -> None:
    result = run_cli("--out", str(tmp_path / "d"), "--num-train", "2", "--regime", "huge")
    one_error_line(result, "mixed")


@pytest.mark.slow
def test_cli_writes_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = run_cli("--out", str(out), "--num-train", "3", "--num-val", "2", "--size", "64")
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "annotations" / "val.json").read_text())
    assert len(document["images"]) == 2
    # the default regime is the default experiment's: one scale regime per image, recorded
    assert document["info"]["regime"] == "per-image"
    assert all("rlpkd_regime" in image for image in document["images"])
    assert "val images by regime: " in result.stdout
