"""Every checkpoint a run loads — teacher/student, policy weights, snapshot, pretrained backbone,
RLlib PPO checkpoint — turns a truncated, foreign or mismatched file into one CheckpointError
line that names the file, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from rlpkd.data.build import build_datasets
from rlpkd.errors import CheckpointError
from rlpkd.models.backbone import build_resnet
from rlpkd.models.factory import build_student, build_teacher
from rlpkd.training.checkpoints import load_detector_checkpoint
from rlpkd.training.teacher_phase import load_teacher


class _Foreign:
    """A pickled object that ``weights_only=True`` refuses to load."""


def _truncated_copy(path: Path, to: Path) -> Path:
    to.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return to


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_teacher_and_student_checkpoints(tiny_config, tmp_path):
    good = tmp_path / "teacher.pt"
    torch.save({"model": build_teacher(tiny_config, 3).state_dict()}, good)
    truncated = _truncated_copy(good, tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError) as error:
        load_teacher(truncated, tiny_config, 3)
    assert str(truncated) in _one_line(error) and "truncated" in str(error.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": _Foreign()}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt") as error:
        load_detector_checkpoint(foreign, tiny_config, "student", 3)
    _one_line(error)

    no_model = tmp_path / "no_model.pt"
    torch.save({"weights": 1}, no_model)
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        load_teacher(no_model, tiny_config, 3)

    with pytest.raises(CheckpointError, match="does not match the config's student") as error:
        load_detector_checkpoint(good, tiny_config, "student", 3)  # a teacher is not a student
    _one_line(error)
    student = tmp_path / "student.pt"
    torch.save({"model": build_student(tiny_config, 3).state_dict()}, student)
    assert load_detector_checkpoint(student, tiny_config, "student", 3) is not None


def test_policy_weights_files(tmp_path):
    from envs.observation import observation_dim
    from policies.level_policy_module import build_level_module
    from policies.weights import read_weights_file, save_weights_file

    good = save_weights_file(
        tmp_path / "policy_weights.pt",
        build_level_module(observation_dim(3), [8]).state_dict(),
        observation_dim(3),
        [8],
    )
    assert read_weights_file(good).hidden_sizes == [8]
    truncated = _truncated_copy(good, tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match="cannot read policy weights") as error:
        read_weights_file(truncated)
    assert str(truncated) in _one_line(error)
    teacher_like = tmp_path / "teacher.pt"
    torch.save({"model": {}}, teacher_like)
    with pytest.raises(CheckpointError, match="lacks 'format'"):
        read_weights_file(teacher_like)
    with pytest.raises(CheckpointError, match="not found"):
        read_weights_file(tmp_path / "missing.pt")


def test_snapshot_files(tiny_config, tmp_path):
    from envs.snapshots import build_snapshot_pool, load_snapshot

    config = tiny_config
    config.rl.snapshot_fractions = [0.0]
    datasets = build_datasets(config.data, progress=False)
    teacher = build_teacher(config, datasets.num_classes).eval()
    (path,) = build_snapshot_pool(config, datasets, teacher, tmp_path / "pool")
    assert load_snapshot(path, config, datasets.num_classes, torch.device("cpu")).step == 0
    _truncated_copy(path, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    with pytest.raises(CheckpointError, match="cannot read snapshot") as error:
        load_snapshot(path, config, datasets.num_classes, torch.device("cpu"))
    assert str(path) in _one_line(error)
    with pytest.raises(CheckpointError, match="delete it"):  # not rebuilt over, not used
        build_snapshot_pool(config, datasets, teacher, tmp_path / "pool")


@pytest.fixture
def torch_hub(tmp_path):
    """A private torch hub directory (its checkpoints/ is where pretrained weights are read)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def test_pretrained_backbone_file(torch_hub):
    name = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    weights = torch_hub / name
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    assert build_resnet(18, pretrained=True) is not None
    _truncated_copy(weights, torch_hub / "half.pth").replace(weights)
    with pytest.raises(CheckpointError, match="pretrained ResNet-18 weights") as error:
        build_resnet(18, pretrained=True)
    assert str(weights) in _one_line(error)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), weights)
    with pytest.raises(CheckpointError, match="do not fit") as error:
        build_resnet(18, pretrained=True)
    _one_line(error)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_ppo_checkpoints(tmp_path):
    """A corrupt RLlib checkpoint is one line naming its folder; one trained from other inputs
    (another fingerprint) is not continued."""
    from policies.ppo_setup import train_policy
    from rlpkd.rundir import read_json
    from tests.policies import TOY_ENV_NAME, toy_config, toy_env_config

    config = toy_config(train_batch_size=32, minibatch_size=32, num_epochs=1)
    env_config = toy_env_config(config)
    good = tmp_path / "policy"

    trained: list[dict] = []

    def train(checkpoint_dir: Path, fingerprint: str, iterations: int = 1):
        trained.clear()
        algo, history = train_policy(
            config,
            env_config,
            iterations,
            checkpoint_dir,
            resume=True,
            progress=False,
            env_name=TOY_ENV_NAME,
            fingerprint=fingerprint,
            on_iteration=trained.append,
        )
        algo.stop()
        return history

    train(good, "inputs-a")
    assert read_json(good / "progress.json")["fingerprint"] == "inputs-a"

    for damaged_file in ("algorithm_state.pkl", "learner_group/learner/state.pkl"):
        damaged = tmp_path / f"damaged-{damaged_file.replace('/', '-')}"
        shutil.copytree(good, damaged)
        target = damaged / "iteration_0001" / damaged_file
        _truncated_copy(target, target.with_suffix(".half")).replace(target)
        with pytest.raises(CheckpointError, match="cannot restore the PPO checkpoint") as error:
            train(damaged, "inputs-a", iterations=2)
        assert f"delete {damaged} " in _one_line(error)

    broken_record = tmp_path / "broken-record"
    shutil.copytree(good, broken_record)
    (broken_record / "progress.json").write_text('{"iteration": 1, "checkp')
    with pytest.raises(CheckpointError, match="progress record") as error:
        train(broken_record, "inputs-a", iterations=2)
    _one_line(error)

    history = train(good, "inputs-b", iterations=2)  # other inputs: PPO starts over
    assert len(trained) == 2 and [h["iteration"] for h in history] == [1, 2]
    record = read_json(good / "progress.json")
    assert record["fingerprint"] == "inputs-b" and record["checkpoint"] == "iteration_0002"
    train(good, "inputs-b", iterations=3)  # the same inputs: PPO continues
    assert len(trained) == 1


@pytest.mark.parametrize("experiment", ["fixed-levels", "search"])
def test_a_truncated_teacher_stops_an_experiment_before_it_writes(tiny_config, experiment):
    from experiments.fixed_level_comparison import run_fixed_level_comparison
    from experiments.search_retrain import run_search_experiment
    from tests.dir_snapshot import directory_snapshot

    out = Path(tiny_config.runtime.out)
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"model": build_teacher(tiny_config, 3).state_dict()}, out / "teacher.pt")
    _truncated_copy(out / "teacher.pt", out / "checkpoints" / "teacher.pt")
    (out / "teacher.pt").unlink()
    before = directory_snapshot(out)
    with pytest.raises(CheckpointError, match="cannot read teacher checkpoint") as error:
        if experiment == "fixed-levels":
            run_fixed_level_comparison(tiny_config)
        else:
            run_search_experiment(tiny_config, "random")
    _one_line(error)
    assert directory_snapshot(out) == before
