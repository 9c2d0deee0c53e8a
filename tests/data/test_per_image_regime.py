"""The ``per-image`` embedded regime: one scale regime per image, recorded, deterministic per seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from experiments.validation import validate_config_names
from rlpkd.config import load_config
from rlpkd.data.size_bins import size_bin
from rlpkd.data.synthetic import (
    PER_IMAGE,
    PER_IMAGE_CHOICES,
    REGIMES,
    generate_embedded_dataset,
    image_regimes,
)
from rlpkd.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
# The COCO size bin every box of an image of each single-band regime must fall in.
REGIME_BAND = {"small-only": "small", "medium-only": "medium", "large-only": "large"}


@pytest.fixture(scope="module")
def per_image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("per_image")
    return generate_embedded_dataset(out, 30, 9, 128, seed=0, regime=PER_IMAGE)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_box_of_an_image_falls_in_its_regime(per_image_dataset: Path) -> None:
    seen = set()
    for split in ("train", "val"):
        annotation_file = per_image_dataset / "annotations" / f"{split}.json"
        document = read(annotation_file)
        regimes = image_regimes(annotation_file)
        assert regimes == {image["id"]: image["rlpkd_regime"] for image in document["images"]}
        for annotation in document["annotations"]:
            _, _, w, h = annotation["bbox"]
            regime = regimes[annotation["image_id"]]
            assert size_bin(w * h) == REGIME_BAND[regime], (regime, w, h)
        seen |= set(regimes.values())
    assert seen == set(PER_IMAGE_CHOICES)  # at 128 px every regime occurs


def test_metadata_counts_the_images_of_each_regime(per_image_dataset: Path) -> None:
    for split, num_images in (("train", 30), ("val", 9)):
        annotation_file = per_image_dataset / "annotations" / f"{split}.json"
        info = read(annotation_file)["info"]
        assert info["regime"] == PER_IMAGE
        regimes = list(image_regimes(annotation_file).values())
        assert info["image_regimes"] == {name: regimes.count(name) for name in PER_IMAGE_CHOICES}
        assert sum(info["image_regimes"].values()) == num_images


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = generate_embedded_dataset(tmp_path / "a", 9, 3, 128, seed=5, regime=PER_IMAGE)
    second = generate_embedded_dataset(tmp_path / "b", 9, 3, 128, seed=5, regime=PER_IMAGE)
    other = generate_embedded_dataset(tmp_path / "c", 9, 3, 128, seed=6, regime=PER_IMAGE)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 2 + 12
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    train = Path("annotations") / "train.json"
    assert (first / train).read_bytes() != (other / train).read_bytes()
    assert image_regimes(first / train) != image_regimes(other / train)


def test_an_image_does_not_depend_on_how_many_images_the_split_has(tmp_path: Path) -> None:
    """Image i's regime and pixels come from its own generator, not from the images before it."""
    short = generate_embedded_dataset(tmp_path / "short", 5, 1, 128, seed=2, regime=PER_IMAGE)
    long = generate_embedded_dataset(tmp_path / "long", 12, 1, 128, seed=2, regime=PER_IMAGE)
    short_regimes = image_regimes(short / "annotations" / "train.json")
    long_regimes = image_regimes(long / "annotations" / "train.json")
    assert short_regimes == {i: long_regimes[i] for i in short_regimes}
    for png in sorted((short / "images" / "train").glob("*.png")):
        assert png.read_bytes() == (long / "images" / "train" / png.name).read_bytes()


def test_small_images_draw_only_the_regimes_that_fit(tmp_path: Path) -> None:
    """At 64 px no large object fits: per-image draws small-only and medium-only images."""
    out = generate_embedded_dataset(tmp_path / "d", 20, 1, 64, seed=0, regime=PER_IMAGE)
    info = read(out / "annotations" / "train.json")["info"]
    assert set(info["image_regimes"]) == {"small-only", "medium-only"}
    with pytest.raises(ConfigError, match="large-only"):
        generate_embedded_dataset(tmp_path / "e", 2, 1, 64, seed=0, regime="large-only")


def test_existing_regimes_are_unchanged(tmp_path: Path) -> None:
    """The regimes that existed before per-image give the same annotations as generator version 1
    did (so GENERATOR_VERSION need not change and cached datasets stay valid)."""
    expected = {
        "mixed": "54612069daeaef653787f9a701289f49bc634bc0389877044516541d9cc83a05",
        "small": "8da7246c9839fe5215be9bbb40a5e38cb1adfe7a1f2d1c06d28d8701881cf982",
        "large": "f8ffc73f4b2ac9f4c6da23059f23033da12d6b7b9d7ac9d6dadf7c24e428140a",
    }
    for regime, digest in expected.items():
        out = generate_embedded_dataset(tmp_path / regime, 12, 4, 128, seed=0, regime=regime)
        data = (out / "annotations" / "train.json").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, regime


def test_image_regimes_of_a_single_regime_dataset_and_of_a_foreign_file(tmp_path: Path) -> None:
    out = generate_embedded_dataset(tmp_path / "m", 4, 1, 64, seed=0, regime="mixed")
    assert set(image_regimes(out / "annotations" / "train.json").values()) == {"mixed"}
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="info.regime"):
        image_regimes(foreign)


def test_default_and_sweep_configs_use_per_image_and_it_validates() -> None:
    for name in ("default.yaml", "sweep.yaml"):
        config = load_config(REPO_ROOT / "configs" / name)
        assert config.data.regime == PER_IMAGE
        validate_config_names(config, name)
    assert PER_IMAGE in REGIMES and "mixed" in REGIMES
    config = load_config(
        REPO_ROOT / "configs" / "default.yaml", ["meta.regimes=[per-image, mixed]"]
    )
    validate_config_names(config)
    bad = load_config(REPO_ROOT / "configs" / "default.yaml", ["data.regime=per-object"])
    with pytest.raises(ConfigError, match="per-image"):
        validate_config_names(bad)
