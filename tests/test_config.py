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


# --- value checks (issue 8): every bad value is one ConfigError naming the key and what is allowed


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("student_schedule.lr=-0.01", "student_schedule.lr", "> 0"),
        ("student_schedule.lr=.nan", "student_schedule.lr", "finite"),
        ("teacher_schedule.lr=.inf", "teacher_schedule.lr", "finite"),
        ("rl.slots=0", "rl.slots", ">= 1"),
        ("rl.episode_steps=0", "rl.episode_steps", ">= 1"),
        ("student_schedule.epochs=0", "student_schedule.epochs", ">= 1"),
        ("teacher_schedule.batch_size=0", "teacher_schedule.batch_size", ">= 1"),
        ("rl.lam=-1", "rl.lam", ">= 0"),
        ("data.hflip_prob=1.5", "data.hflip_prob", "in [0, 1]"),
        ("rl.gamma=-0.1", "rl.gamma", "in [0, 1]"),
        ("rl.learner=both", "rl.learner", "one of 'bank', 'live'"),
        ("rl.bank_heldout_fraction=1.0", "rl.bank_heldout_fraction", "in (0, 1)"),
        ("rl.heldout_size=0", "rl.heldout_size", ">= 1"),
        ("rl.policy_head=both", "rl.policy_head", "one of 'joint', 'factorised'"),
        ("experiment.control_seeds=[1]", "experiment.control_seeds", "starting with its first"),
        ("experiment.control_seeds=[0, 7]", "experiment.control_seeds", "seeds of experiment"),
        ("rl.snapshot_fractions=[0.0, 1.2]", "rl.snapshot_fractions[1]", "in [0, 1]"),
        ("distill.norm_momentum=1.0", "distill.norm_momentum", "in [0, 1)"),
        ("student_schedule.momentum=1.0", "student_schedule.momentum", "in [0, 1)"),
        ("eval.score_threshold=2", "eval.score_threshold", "in [0, 1]"),
        ("data.num_workers=-1", "data.num_workers", ">= 0"),
        ("sweep.rl_lams=[0.1, -0.1]", "sweep.rl_lams[1]", ">= 0"),
        ("distill.loss_params={temperature: .nan}", "distill.loss_params.temperature", "finite"),
        ("runtime.device=gpu0", "runtime.device", "'cuda:N'"),
        ("student_schedule.optimizer=adam", "student_schedule.optimizer", "'adamw'"),
        ("data.image_size=100", "data.image_size", "multiple of 32"),
        ("meta.regimes=[]", "meta.regimes", "at least one"),
        ("rl.minibatch_size=512", "rl.minibatch_size", "rl.train_batch_size"),
        ("rl.budget_pace=[0, 0]", "rl.budget_pace", "weights not all 0"),
        ("rl.budget_pace=[1, -1]", "rl.budget_pace[1]", ">= 0"),
        ("sweep.asha_reduction_factor=1", "sweep.asha_reduction_factor", ">= 2"),
        ("student.init=fcos.pth", "student.init", "only the teacher"),
    ],
)
def test_bad_value_is_one_line_naming_key_value_and_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    message = str(error.value)
    assert "\n" not in message
    assert f"'{key}'" in message and allowed in message


def test_every_field_of_every_section_has_a_rule():
    import dataclasses

    from rlpkd.config import FIELD_RULES, Config

    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        assert cls in FIELD_RULES, section.name
        assert set(FIELD_RULES[cls]) == {f.name for f in dataclasses.fields(cls)}, section.name


def test_exponent_float_without_a_dot_is_a_float_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("student_schedule:\n  lr: 1e-3\nrl:\n  lr: 3E-4\n  lam: 2e0\n")
    config = load_config(path)
    assert config.student_schedule.lr == pytest.approx(1e-3)
    assert config.rl.lr == pytest.approx(3e-4) and config.rl.lam == pytest.approx(2.0)
    config = load_config(None, ["student_schedule.lr=1e-3", "search.alpha_lr=5e-2"])
    assert config.student_schedule.lr == pytest.approx(1e-3)
    assert config.search.alpha_lr == pytest.approx(0.05)
    # the corrected resolver changes nothing else: ints stay ints, other text stays text
    config = load_config(None, ["rl.slots=12", "runtime.out=1e3run", "distill.levels=P2,P4"])
    assert config.rl.slots == 12 and isinstance(config.rl.slots, int)
    assert config.runtime.out == "1e3run" and config.distill.levels == "P2,P4"


def test_repo_configs_pass_the_name_checks():
    from experiments.validation import validate_config_names
    from tests.conftest import REPO

    names = ["default", "debug", "sweep", "coco_r50_r18"]
    for name in names:
        validate_config_names(load_config(REPO / "configs" / f"{name}.yaml"))
