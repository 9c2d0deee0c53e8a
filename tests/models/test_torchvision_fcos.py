"""``teacher.init``: torchvision's fcos_resnet50_fpn state dict maps into a P2-P5 teacher whose
P3-P5 features and head equal torchvision's, and Phase 1 trains only what was not mapped."""

from __future__ import annotations

import pytest
import torch
import torchvision

from experiments.cli import check_run_inputs
from rlpkd.config import ModelConfig, load_config
from rlpkd.config_validation import TORCHVISION_FCOS_ARCHITECTURE
from rlpkd.data.build import DetectionDatasets, build_datasets
from rlpkd.errors import CheckpointError, ConfigError
from rlpkd.models.detector import build_detector
from rlpkd.models.factory import build_teacher
from rlpkd.models.torchvision_fcos import (
    COCO_CATEGORY_NAMES,
    coco_class_rows,
    load_torchvision_fcos,
    torchvision_fcos_key_map,
)
from rlpkd.rundir import RunDirectory
from rlpkd.runtime import seed_everything
from rlpkd.training.teacher_phase import load_or_train_teacher, teacher_fingerprint
from tests.conftest import REPO, THRESHOLDS, tiny_overrides

R50_FCOS = ModelConfig(**TORCHVISION_FCOS_ARCHITECTURE)
COCO_CLASSES = [(1, "person"), (3, "car"), (90, "toothbrush")]


@pytest.fixture(scope="module")
def torchvision_fcos(tmp_path_factory):
    """A randomly initialised torchvision FCOS in eval mode (BatchNorm statistics moved off
    their defaults, so a BatchNorm that is not mapped shows) and its state dict's file."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.7, 1.3)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("hub") / "fcos_resnet50_fpn_coco.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.fixture(scope="module")
def mapped_teacher(torchvision_fcos):
    _, path = torchvision_fcos
    torch.manual_seed(1)
    teacher = build_detector(R50_FCOS, len(COCO_CLASSES), THRESHOLDS)
    return teacher.eval(), load_torchvision_fcos(teacher, path, COCO_CLASSES)


def test_every_mapped_tensor_equals_torchvision_s(torchvision_fcos, mapped_teacher):
    model, _ = torchvision_fcos
    teacher, init = mapped_teacher
    theirs, ours = model.state_dict(), teacher.state_dict()
    key_map = torchvision_fcos_key_map(teacher)
    rows = [category_id for category_id, _ in COCO_CLASSES]
    for name in init.mapped:
        if name.startswith("head.cls_logits."):
            source = theirs["head.classification_head.cls_logits." + name.rsplit(".", 1)[1]][rows]
        else:
            source = theirs[key_map[name]]
        assert torch.equal(ours[name], source), name
    # all but the P2 lateral and output (torchvision's FPN starts at C3)
    assert set(init.unmapped) == {
        f"fpn.{kind}_blocks.0.0.{tensor}"
        for kind in ("inner", "layer")
        for tensor in ("weight", "bias")
    }
    assert len(init.mapped) + len(init.unmapped) == len(ours)


def test_p3_to_p5_and_the_head_equal_torchvision_s(torchvision_fcos, mapped_teacher):
    model, _ = torchvision_fcos
    teacher, _ = mapped_teacher
    torch.manual_seed(2)
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ours = teacher.pyramid(images)
        theirs = model.backbone(teacher.normalise(images))
        for level, index in (("P3", "0"), ("P4", "1"), ("P5", "2")):
            torch.testing.assert_close(ours[level], theirs[index], atol=1e-5, rtol=1e-5)
        head = teacher.head(ours["P5"])
        their_head = model.head([theirs["2"]])
    rows = [category_id for category_id, _ in COCO_CLASSES]
    as_rows = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  [B, C, H, W] -> [B, HW, C]
    torch.testing.assert_close(as_rows(head.class_logits), their_head["cls_logits"][..., rows])
    torch.testing.assert_close(as_rows(head.box_distances), their_head["bbox_regression"])
    torch.testing.assert_close(as_rows(head.centerness_logits), their_head["bbox_ctrness"])


def test_a_file_without_batchnorm_counters_loads(tmp_path, torchvision_fcos):
    """torchvision's COCO_V1 file was saved with FrozenBatchNorm2d: no num_batches_tracked."""
    model, _ = torchvision_fcos
    path = tmp_path / "frozen_bn.pth"
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    teacher = build_detector(R50_FCOS, 3, THRESHOLDS)
    init = load_torchvision_fcos(teacher, path, [(1, "person"), (2, "car"), (3, "bus")])
    assert not any(name.endswith("num_batches_tracked") for name in init.mapped + init.unmapped)
    assert {"head.cls_logits.weight", "fpn.layer_blocks.0.0.weight"} <= set(init.unmapped)
    key_map = torchvision_fcos_key_map(teacher)
    for name in init.mapped:
        assert torch.equal(teacher.state_dict()[name], state[key_map[name]]), name


def test_class_logits_are_mapped_only_for_coco_categories():
    assert COCO_CATEGORY_NAMES[1] == "person" and len(COCO_CATEGORY_NAMES) == 91
    assert coco_class_rows(COCO_CLASSES) == [1, 3, 90]
    assert coco_class_rows([(1, "person"), (2, "car")]) is None  # COCO's id 2 is a bicycle
    assert coco_class_rows([(1, "circle")]) is None  # the embedded data's classes
    assert coco_class_rows([]) is None


@pytest.fixture(scope="module")
def meta_r50():
    """A detector of torchvision's architecture with no storage: enough to be refused a file."""
    with torch.device("meta"):
        return build_detector(R50_FCOS, 3, THRESHOLDS)


def _one_line_error(error_type, detector, path) -> str:
    with pytest.raises(error_type) as error:
        load_torchvision_fcos(detector, path)
    message = str(error.value)
    assert "\n" not in message and "teacher.init" in message
    return message


@pytest.mark.parametrize("content", ["text", "list"])
def test_a_file_that_is_not_a_state_dict_is_one_line_error(tmp_path, content, meta_r50):
    teacher = meta_r50
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("not weights")
    else:
        torch.save([torch.zeros(2)], path)
    assert str(path) in _one_line_error(CheckpointError, teacher, path)
    assert "not found" in _one_line_error(CheckpointError, teacher, tmp_path / "missing.pth")


def test_another_model_s_state_dict_is_one_line_error(tmp_path, torchvision_fcos, meta_r50):
    teacher = meta_r50
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    message = _one_line_error(CheckpointError, teacher, resnet18)
    assert str(resnet18) in message and "lacks" in message
    wrong_shapes = tmp_path / "shapes.pth"
    torch.save({key: torch.zeros(1) for key in torchvision_fcos[0].state_dict()}, wrong_shapes)
    assert "has shape [1]" in _one_line_error(CheckpointError, teacher, wrong_shapes)


def test_another_architecture_is_one_line_config_error(tiny_teacher, torchvision_fcos):
    assert "'teacher.depth'" in _one_line_error(ConfigError, tiny_teacher, torchvision_fcos[1])
    for override, key in (("teacher.head_convs=1", "teacher.head_convs"), ("student.init=x", "")):
        with pytest.raises(ConfigError, match=f"'{key or 'student.init'}'"):
            load_config(None, ["teacher.init=fcos.pth", override])


def test_the_teacher_fingerprint_follows_the_init_file(tmp_path):
    files = [tmp_path / "a.pth", tmp_path / "b.pth"]
    files[0].write_bytes(b"a")
    files[1].write_bytes(b"b")
    prints = {teacher_fingerprint(load_config(None, [f"teacher.init={f}"])) for f in files}
    prints.add(teacher_fingerprint(load_config(None, [])))
    assert len(prints) == 3
    files[0].write_bytes(b"changed")  # the same path, other weights: another teacher
    assert teacher_fingerprint(load_config(None, [f"teacher.init={files[0]}"])) not in prints


def test_phase_1_trains_only_what_was_not_mapped(tiny_data_root, tmp_path, torchvision_fcos):
    model, path = torchvision_fcos
    config = load_config(
        REPO / "configs" / "debug.yaml",
        [
            *tiny_overrides(tiny_data_root),
            *(f"teacher.{name}={value}" for name, value in TORCHVISION_FCOS_ARCHITECTURE.items()),
            f"teacher.init={path}",
            "teacher_schedule.batch_size=4",
            "teacher_schedule.warmup_steps=0",
            f"runtime.out={tmp_path / 'run'}",
        ],
    )
    check_run_inputs(config)
    full = build_datasets(config.data, progress=False)  # one step on 4 images, 2 to evaluate
    datasets = DetectionDatasets(full.train.subset(range(4), True), full.val.subset([0, 1], False))
    run_dir = RunDirectory(tmp_path / "run").prepare(config)
    teacher, _ = load_or_train_teacher(config, datasets, torch.device("cpu"), run_dir, False)
    theirs, ours = model.state_dict(), teacher.state_dict()
    key_map = torchvision_fcos_key_map(teacher)
    for name, source in key_map.items():  # BatchNorm statistics included: they did not drift
        assert torch.equal(ours[name], theirs[source]), name
    seed_everything(config.runtime.seed)  # the teacher as Phase 1 built it, before training
    fresh = build_teacher(config, datasets.num_classes).state_dict()
    # the embedded classes are not COCO's: their logits train beside the P2 lateral and output
    for name in (
        "fpn.inner_blocks.0.0.weight",
        "fpn.layer_blocks.0.0.weight",
        "head.cls_logits.weight",
    ):
        assert name not in key_map
        assert not torch.equal(ours[name], fresh[name]), name
