"""Config loading: defaults, overrides, and one-line errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from rlpkd.config import config_to_dict, load_config
from rlpkd.errors import ConfigError


def test_repo_configs_load(tmp_path):
    from tests.conftest import REPO

    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


def test_override_changes_value_and_parses_yaml_types():
    config = load_config(None, ["distill.loss=mse", "data.level_thresholds=[2, 4, 8]"])
    assert config.distill.loss == "mse"
    assert config.data.level_thresholds == [2.0, 4.0, 8.0]


def test_partial_section_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"width": 0.5}}))
    config = load_config(path)
    assert config.teacher.width == 0.5 and config.teacher.depth == 50


def test_unknown_key_names_key_and_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  lose: mse\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "distill.lose" in message and "loss" in message and str(path) in message


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"student_schedule.lr' expects float"):
        load_config(None, ["student_schedule.lr=fast"])


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="epochs"):
        load_config(None, ["student_schedule.epochs=true"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["student.width=0.5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert load_config(path) == config
