"""Registry names and run inputs are checked at load, before anything is written (issue 8)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from experiments.cli import check_out_dir, check_run_inputs, checked_config
from experiments.validation import validate_config_names
from rlpkd.config import load_config
from rlpkd.errors import CheckpointError, ConfigError, DataError


@pytest.mark.parametrize(
    ("override", "key", "valid"),
    [
        ("distill.loss=nope", "distill.loss", "pkd"),
        ("distill.levels=P7", "distill.levels", "P2"),
        ("experiment.level_sets=[all, P2+P3]", "experiment.level_sets[1]", "P5"),
        ("experiment.ablation=[P6]", "experiment.ablation[0]", "P5"),
        ("rl.static_baselines=[random:1.5]", "rl.static_baselines[0]", "[0, 1]"),
        ("sweep.baselines=[scale-rules]", "sweep.baselines[0]", "P2"),
        ("sweep.nas_methods=[darts, enas]", "sweep.nas_methods[1]", "gdas"),
        ("data.regime=tiny", "data.regime", "mixed"),
        ("meta.regimes=[small, huge]", "meta.regimes[1]", "large"),
        ("student.depth=20", "student.depth", "101"),
        ("meta.student_depths=[18, 19]", "meta.student_depths[1]", "34"),
        ("distill.loss_params={temperature: 2.0}", "distill.loss_params.temperature", "eps"),
        ("rl.reward=gap", "rl.reward", "gap_drop, value"),
        ("rl.reward=gap_drop", "rl.learner", "set rl.learner: live"),
    ],
)
def test_unknown_name_is_one_line_with_the_valid_names(override, key, valid):
    config = load_config(None, [override])  # types and ranges are fine
    with pytest.raises(ConfigError) as error:
        validate_config_names(config, "c.yaml")
    message = str(error.value)
    assert "\n" not in message and f"'{key}'" in message and valid in message


def test_checked_config_rejects_a_bad_name_before_any_phase(tmp_path):
    with pytest.raises(ConfigError, match="distill.loss"):
        checked_config(None, ["distill.loss=nope", f"runtime.out={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def _deny_writes_under(root):
    """os.access, except that nothing under ``root`` is writable (root ignores chmod)."""

    def access(path, mode):
        if mode & os.W_OK and (path == root or root in path.parents):
            return False
        return os.access(path, mode)

    return access


def _mode_bits_access(path, mode):
    """os.access as a non-root user sees it: the owner's permission bits decide."""
    bits = stat.S_IMODE(os.stat(path).st_mode)
    wanted = (stat.S_IWUSR if mode & os.W_OK else 0) | (stat.S_IXUSR if mode & os.X_OK else 0)
    return bits & wanted == wanted


def test_out_that_is_a_file_or_under_a_file_is_rejected(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(existing)
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(existing / "run")
    assert existing.read_text() == "keep me"


def test_out_that_cannot_be_written_is_rejected(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with pytest.raises(ConfigError, match=r"its parent .*locked is not writable"):
        check_out_dir(locked / "new" / "run", access=_deny_writes_under(locked))
    with pytest.raises(ConfigError, match="the run directory is not writable"):
        check_out_dir(locked, access=_deny_writes_under(locked))
    locked.chmod(0o500)  # what a user sees; root passes os.access, so ask as a user would
    try:
        access = os.access if os.geteuid() != 0 else _mode_bits_access
        with pytest.raises(ConfigError, match="not writable"):
            check_out_dir(locked / "run", access=access)
    finally:
        locked.chmod(0o700)
    check_out_dir(locked / "run")  # writable again: no error, nothing created
    assert not (locked / "run").exists()


def test_missing_coco_paths_are_named(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    annotations = tmp_path / "train.json"
    annotations.write_text("{}")
    overrides = [
        "data.source=coco",
        f"data.train_images={images}",
        f"data.train_annotations={annotations}",
        f"data.val_images={tmp_path / 'no-val-images'}",
        f"data.val_annotations={annotations}",
        f"runtime.out={tmp_path / 'run'}",
    ]
    with pytest.raises(DataError, match=r"data.val_images .*no-val-images"):
        check_run_inputs(load_config(None, overrides))
    with pytest.raises(ConfigError, match="data.val_annotations"):
        load_config(None, [*overrides[:4], "data.val_annotations=''"])


def test_script_input_file_must_exist(tmp_path):
    config = load_config(None, [f"runtime.out={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"--teacher checkpoint not found: .*teacher.pt"):
        check_run_inputs(config, [(tmp_path / "teacher.pt", "--teacher checkpoint")])


def test_warm_start_is_loaded_and_checked_up_front(tmp_path):
    out = f"runtime.out={tmp_path / 'run'}"
    good = tmp_path / "meta.pt"
    torch.save({"state": {"w": torch.zeros(2)}, "hidden_sizes": [64, 64]}, good)
    check_run_inputs(load_config(None, [out, f"meta.warm_start={good}"]))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"meta.warm_start .*truncated.pt"):
        check_run_inputs(load_config(None, [out, f"meta.warm_start={truncated}"]))
    with pytest.raises(CheckpointError, match="not found"):
        check_run_inputs(load_config(None, [out, f"meta.warm_start={tmp_path / 'none.pt'}"]))
    with pytest.raises(CheckpointError, match=r"hidden sizes \[64, 64\] but rl.hidden_sizes"):
        check_run_inputs(load_config(None, [out, f"meta.warm_start={good}", "rl.hidden_sizes=[8]"]))
    assert not (tmp_path / "run").exists()
