"""The COCO path on a file shaped like real COCO (tests/data/coco_fixture.py)."""

from __future__ import annotations

import pytest
import torch

from rlpkd.data.annotations import clip_box_to_image
from rlpkd.data.coco import collate_detection
from tests.data.coco_fixture import (
    BUSY,
    COCO_CATEGORY_IDS,
    COCO_NAMES,
    CROWD_ID,
    EDGES,
    EMPTY,
    IMAGE_SIZE,
    PAST_EDGE_ID,
    TALL,
    UNTRAINABLE_IDS,
    WIDE,
    ZERO_WIDTH_ID,
    CocoFixture,
)


def trained_annotations(fixture: CocoFixture, image_id: int) -> list[dict]:
    """The fixture's annotations of one image that should be training targets, in file order."""
    info = next(i for i in fixture.document["images"] if i["id"] == image_id)
    return [
        a
        for a in fixture.document["annotations"]
        if a["image_id"] == image_id
        and not a["iscrowd"]
        and clip_box_to_image(a["bbox"], info["width"], info["height"]) is not None
    ]


def test_eighty_coco_categories_map_to_contiguous_labels(coco_dataset, coco_fixture) -> None:
    assert coco_dataset.num_classes == 80
    assert coco_dataset.category_ids == list(COCO_CATEGORY_IDS)
    assert coco_dataset.category_ids[-1] == 90 and coco_dataset.class_names[-1] == "toothbrush"
    assert coco_dataset.class_names == list(COCO_NAMES)
    for index in range(len(coco_dataset)):
        sample = coco_dataset[index]
        expected = [a["category_id"] for a in trained_annotations(coco_fixture, sample.image_id)]
        assert all(0 <= label < 80 for label in sample.labels.tolist())
        assert [coco_dataset.category_ids[label] for label in sample.labels.tolist()] == expected


def test_letterbox_maps_boxes_of_every_aspect_ratio(coco_dataset, coco_fixture) -> None:
    images = {i["id"]: i for i in coco_fixture.document["images"]}
    assert sorted(images) == coco_dataset.image_ids
    for index in range(len(coco_dataset)):
        sample = coco_dataset[index]
        info = images[sample.image_id]
        assert sample.image.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert sample.scale == pytest.approx(IMAGE_SIZE / max(info["width"], info["height"]))
        expected = [
            clip_box_to_image(a["bbox"], info["width"], info["height"])
            for a in trained_annotations(coco_fixture, sample.image_id)
        ]
        assert sample.boxes.shape == (len(expected), 4)
        if expected:
            back = sample.boxes / sample.scale
            assert torch.allclose(back, torch.tensor(expected), atol=1e-3), sample.image_id
    busy = coco_dataset[coco_dataset.image_ids.index(BUSY)]
    assert busy.boxes.shape[0] == 36
    assert coco_dataset[coco_dataset.image_ids.index(EMPTY)].boxes.shape == (0, 4)


def test_full_height_box_of_a_very_wide_image_keeps_its_full_height(coco_dataset) -> None:
    """240×12 at 64 px: the content is 3.2 px high; the box must not be cut to 3 px."""
    wide = coco_dataset[coco_dataset.image_ids.index(WIDE)]
    assert wide.boxes[0].tolist() == pytest.approx([100 * 0.8 / 3, 0.0, 140 * 0.8 / 3, 3.2])
    # The grayscale block under the box is bright in all three channels, its surroundings dark.
    inside = wide.image[:, 0:3, 28:37]
    assert inside.min() > 0.9
    assert wide.image[:, 0:3, 20:25].max() < 0.1 and wide.image[:, 0:3, 40:60].max() < 0.1
    assert wide.image[:, 4:].abs().sum() == 0  # padding below the content


def test_palette_and_rgba_images_decode_to_rgb(coco_dataset) -> None:
    tall = coco_dataset[coco_dataset.image_ids.index(TALL)]
    assert torch.allclose(tall.image[:, 10, 1], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert torch.allclose(tall.image[:, 50, 1], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)
    assert tall.image[:, :, 4:].abs().sum() == 0  # 3.2 px wide content, padding to the right
    rgba = coco_dataset[coco_dataset.image_ids.index(EMPTY)]
    assert torch.allclose(rgba.image[:, 30, 20], torch.tensor([0.0, 200 / 255, 0.0]), atol=0.02)


def test_crowd_untrainable_and_clipped_boxes_are_reported(coco_dataset, coco_fixture) -> None:
    report = coco_dataset.ground_truth_report
    assert report.total_boxes == len(coco_fixture.document["annotations"])
    assert (report.crowd_boxes, report.untrainable_boxes, report.clipped_boxes) == (1, 3, 1)
    assert report.first_untrainable.annotation_id == ZERO_WIDTH_ID
    assert report.first_untrainable.image_id == EDGES
    assert report.first_untrainable.bbox == (5.0, 5.0, 0.0, 3.0)
    note = report.note("instances.json")
    assert note.startswith(
        "note: instances.json: 3 of 51 boxes cannot be trained on (w or h < 1 px inside the "
        "image), e.g. annotation 900101 (image 174482) bbox [5, 5, 0, 3], ignored in training "
        "and evaluation; 1 of 51 boxes are crowd regions"
    )
    assert "\n" not in note
    # The evaluation ground truth: untrainable boxes are ignore regions, the crowd one stays,
    # the box past the image's edge is clipped as in training.
    anns = coco_dataset.coco.anns
    for annotation_id in UNTRAINABLE_IDS:
        assert anns[annotation_id]["iscrowd"] == 1 and anns[annotation_id]["rlpkd_ignored"]
    assert anns[CROWD_ID]["iscrowd"] == 1 and "rlpkd_ignored" not in anns[CROWD_ID]
    assert anns[PAST_EDGE_ID]["bbox"] == [0.0, 40.0, 14.0, 20.0]
    assert len(anns) == len(coco_fixture.document["annotations"])


def test_collated_batch_of_mixed_images(coco_dataset) -> None:
    batch = collate_detection([coco_dataset[i] for i in range(len(coco_dataset))])
    assert batch.images.shape == (len(coco_dataset), 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch.boxes.shape[1] == 36
    assert batch.valid.sum().item() == sum(
        len(coco_dataset[i].labels) for i in range(len(coco_dataset))
    )


def test_preload_matches_lazy_loading(coco_dataset, coco_fixture) -> None:
    preloaded = coco_fixture.dataset(preload=True)
    for index in range(len(coco_dataset)):
        assert torch.equal(preloaded[index].image, coco_dataset[index].image)


def test_flip_of_a_tall_image_stays_inside_its_content(coco_fixture: CocoFixture) -> None:
    """The content is 3.2 px wide: flipped boxes stay within the 4 content columns."""
    flipping = coco_fixture.dataset(train=True, hflip_prob=1.0)
    tall = flipping[flipping.image_ids.index(TALL)]
    assert tall.boxes[:, 0::2].min() >= 0 and tall.boxes[:, 0::2].max() <= 4.0
    assert tall.image[:, :, 4:].abs().sum() == 0
