"""The headroom report end to end on a tiny per-image config, and its up-front input checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.headroom import HeadroomOptions, check_headroom_inputs, parse_subsets, run_headroom
from rlpkd.config import load_config
from rlpkd.data.embedded import ensure_embedded_dataset
from rlpkd.errors import ConfigError, UserError
from rlpkd.levels import LEVELS
from tests.conftest import REPO, tiny_overrides
from tests.dir_snapshot import directory_snapshot


@pytest.fixture(scope="module")
def per_image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("per_image_data")
    ensure_embedded_dataset(root, 24, 12, 64, 0, "per-image", progress=False)
    return root


def _config(root: Path, out: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "debug.yaml",
        [
            *tiny_overrides(root),
            "data.regime=per-image",
            "runtime.num_threads=1",
            f"runtime.out={out}",
            "rl.snapshot_fractions=[0.0,0.5]",
            *overrides,
        ],
    )


@pytest.mark.slow  # trains a teacher, a snapshot pool and six students: 4-15 s on 2 cores
def test_tiny_headroom_run_writes_the_report_and_reuses_students(per_image_root, tmp_path):
    out = tmp_path / "run"
    config = _config(per_image_root, out)
    options = HeadroomOptions(
        value_batches=1, heldout_size=4, subsets=parse_subsets(["none", "P2", "all"])
    )
    report = run_headroom(config, options)
    for name in (
        "headroom.md",
        "headroom.json",
        "plots/headroom.png",
        "plots/headroom_methods.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "headroom.json").read_text())
    for key in (
        "values",
        "static_subsets",
        "best_subset_by_regime",
        "methods",
        "comparison",
        "teacher",
        "kd_gflops_by_subset",
        "wall_time_s",
    ):
        assert key in saved, key
    regimes = saved["regimes"]
    assert set(regimes) <= {"small-only", "medium-only", "large-only"} and len(regimes) >= 2
    # one value row per valued sample, at every snapshot, with its regime
    snapshots = saved["values"]["snapshots"]
    assert len(snapshots) == len(config.rl.snapshot_fractions)
    for snapshot in snapshots:
        assert len(snapshot["rows"]) == 8 and all(len(r["values"]) == 4 for r in snapshot["rows"])
        share = snapshot["anova"]["interaction_share"]
        assert 0.0 <= share <= 1.0
    assert saved["values"]["pooled"]["num_samples"] == 8 * len(snapshots)
    # the static table, a best subset per regime, the four compared methods over the seeds
    assert [run["levels"] for run in saved["static_subsets"]] == ["none", "P2", "all"]
    assert set(saved["best_subset_by_regime"]) == set(regimes)
    assert set(saved["methods"]) == {
        "oracle",
        "best static ≤ oracle FLOPs",
        "all levels",
        "scale rule",
    }
    oracle = saved["methods"]["oracle"]
    assert oracle["table"] == {r: saved["best_subset_by_regime"][r]["levels"] for r in regimes}
    for method in saved["methods"].values():
        assert method["seeds"] == list(config.experiment.seeds)
        assert set(method["AP_by_regime"]) == set(regimes)
    best = saved["best_static_at_oracle_flops"]
    assert best["kd_gflops_model"] <= saved["oracle_kd_gflops_model"] + 1e-9
    assert saved["kd_gflops_by_subset"]["P2,P3,P4,P5"] == pytest.approx(
        saved["methods"]["all levels"]["kd_gflops_mean"], rel=1e-6
    )
    text = (out / "headroom.md").read_text()
    assert "interaction share" in text and "Oracle − best static subset" in text
    assert "SCORED" in text.upper() and "upper bound" in text
    assert report["regimes"] == regimes
    # a rerun reuses every finished student
    students = out / "students"
    before = {p: p.stat().st_mtime_ns for p in students.glob("*/metrics.json")}
    run_headroom(config, options)
    assert {p: p.stat().st_mtime_ns for p in students.glob("*/metrics.json")} == before


@pytest.mark.parametrize(
    ("options", "overrides", "needle"),
    [
        (HeadroomOptions(value_batches=0), [], "--value-batches 0"),
        (HeadroomOptions(heldout_size=0), [], "--heldout-size 0"),
        (HeadroomOptions(value_batches=50), [], "make only 2 batches"),
        (HeadroomOptions(), ["experiment.seeds=[]"], "experiment.seeds"),
    ],
)
def test_bad_input_fails_before_writing(per_image_root, tmp_path, options, overrides, needle):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.json").write_text('{"AP": 0.5}\n')
    before = directory_snapshot(out)
    with pytest.raises(UserError, match=needle.replace("[", r"\[")):
        run_headroom(_config(per_image_root, out, *overrides), options)
    assert directory_snapshot(out) == before


def test_subset_specs_and_data_source_are_checked(per_image_root, tmp_path):
    assert parse_subsets(["all", "P2,p3", "all", "none"]) == (LEVELS, ("P2", "P3"), ())
    with pytest.raises(ConfigError, match="--subsets.*P7"):
        parse_subsets(["P2", "P7"])
    config = _config(per_image_root, tmp_path / "x")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source="coco"))
    with pytest.raises(ConfigError, match="embedded"):
        check_headroom_inputs(config, HeadroomOptions())
