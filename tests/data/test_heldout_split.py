"""The search split (search-train / held-out part of the training split) and dataset views."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlpkd.data.build import build_datasets, heldout_split
from rlpkd.evaluation.coco_eval import evaluate_coco


def test_search_split_partitions_the_training_split(tiny_config):
    datasets = build_datasets(tiny_config.data, progress=False)
    train_ids, val_ids = datasets.train.image_ids, datasets.val.image_ids
    split = heldout_split(datasets, 0.25, seed=0)
    search_train, holdout = split.train.image_ids, split.val.image_ids
    assert len(holdout) == round(0.25 * 24) == 6
    assert set(search_train).isdisjoint(holdout)
    assert sorted(search_train + holdout) == sorted(train_ids)
    assert split.val.coco is datasets.train.coco  # held out from train, not the val split
    assert split.train.train and not split.val.train  # flips on for training only
    assert datasets.val.image_ids == val_ids and len(datasets.val) == 12  # untouched
    assert datasets.train.image_ids == train_ids and datasets.train.train
    again = heldout_split(datasets, 0.25, seed=0)
    assert again.val.image_ids == holdout and again.train.image_ids == search_train
    assert heldout_split(datasets, 0.25, seed=1).val.image_ids != holdout


@pytest.mark.parametrize("preload", [True, False])
def test_subset_view_matches_the_chosen_images(tiny_config, preload):
    data = dataclasses.replace(tiny_config.data, preload=preload)
    full = build_datasets(data, progress=False).val
    indices = [7, 0, 3, 11]
    view = full.subset(indices, train=False)
    assert view.image_ids == [full.image_ids[i] for i in indices]
    assert len(view) == len(indices)
    for position, index in enumerate(indices):
        sample, expected = view[position], full[index]
        assert sample.image_id == expected.image_id
        assert torch.equal(sample.image, expected.image)
        assert torch.equal(sample.boxes, expected.boxes)
        assert torch.equal(sample.labels, expected.labels)


def _ground_truth_as_results(dataset, image_ids):
    annotations = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=image_ids, iscrowd=False))
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in annotations
    ]


def test_evaluation_restricted_to_a_view(tiny_config):
    full = build_datasets(tiny_config.data, progress=False).val
    view = full.subset([1, 2, 5], train=False)
    results = _ground_truth_as_results(view, view.image_ids)
    assert results
    # Perfect detections on the view's images: AP 1 on the view, but below 1 on the whole split,
    # whose other images' boxes are all missed.
    assert evaluate_coco(view.coco, results, view.image_ids)["AP"] == 1.0
    assert evaluate_coco(full.coco, results, full.image_ids)["AP"] < 1.0
