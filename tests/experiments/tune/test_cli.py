"""scripts/sweep.py: bad input is one line and exit 2, and it leaves an existing sweep alone."""

from __future__ import annotations

import pytest

from tests.conftest import one_error_line
from tests.experiments.tune.conftest import run_sweep_script, tiny_sweep_overrides

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def _bad_dataset(tmp_path) -> list[str]:
    missing = tmp_path / "missing.json"
    return [
        "data.source=coco",
        f"data.train_images={tmp_path}",
        f"data.train_annotations={missing}",
        f"data.val_images={tmp_path}",
        f"data.val_annotations={missing}",
    ]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("dataset", "missing.json"),
        ("key", "sweep.sheduler"),
        ("asha", "asha_grace_period"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tiny_data_root, tmp_path, case, expected
):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "report.md").write_text("an earlier report\n")
    extra = {
        "dataset": _bad_dataset(tmp_path),
        "key": ["sweep.sheduler=asha"],
        "asha": ["sweep.scheduler=asha", "sweep.rl_lams=[0.1]", "sweep.asha_grace_period=9"],
    }[case]
    overrides = tiny_sweep_overrides(tiny_data_root, sweep, *extra)
    one_error_line(run_sweep_script(overrides), expected)
    assert sorted(p.name for p in sweep.iterdir()) == ["report.md"]
    assert (sweep / "report.md").read_text() == "an earlier report\n"
