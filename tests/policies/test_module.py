"""The shared level-selection RLModule, its weights files and the Phase-3 PolicyLevels selector."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical

from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from policies.weights import module_from_weights_file, read_weights_file, save_weights_file
from rlpkd.data.batch import DetectionBatch
from rlpkd.errors import UserError
from rlpkd.levels import NUM_SUBSETS, subsets_to_masks
from rlpkd.training.level_selection import (
    FingerprintedSelector,
    StatefulSelector,
    StudentObservingSelector,
)
from rlpkd.training.student_phase import selector_key

OBS_DIM = 7


@pytest.fixture
def module():
    torch.manual_seed(0)
    return build_level_module(OBS_DIM, [16, 8])


def test_forward_passes_and_values_have_the_right_shapes(module):
    batch = {Columns.OBS: torch.randn(5, OBS_DIM)}
    for forward in (module.forward_inference, module.forward_exploration):
        out = forward(batch)
        assert out[Columns.ACTION_DIST_INPUTS].shape == (5, NUM_SUBSETS)
    train = module.forward_train(batch)
    assert train[Columns.ACTION_DIST_INPUTS].shape == (5, NUM_SUBSETS)
    assert train[Columns.EMBEDDINGS].shape == (5, 8)
    values = module.compute_values(batch)
    assert values.shape == (5,)
    # the embeddings from forward_train give the same values as a fresh encoder pass
    torch.testing.assert_close(module.compute_values(batch, train[Columns.EMBEDDINGS]), values)
    assert train[Columns.ACTION_DIST_INPUTS].requires_grad


def test_action_distribution_is_a_categorical_over_the_16_subsets(module):
    for get in (
        module.get_inference_action_dist_cls,
        module.get_exploration_action_dist_cls,
        module.get_train_action_dist_cls,
    ):
        assert get() is TorchCategorical
    logits = module.forward_exploration({Columns.OBS: torch.randn(64, OBS_DIM)})
    dist = TorchCategorical.from_logits(logits[Columns.ACTION_DIST_INPUTS])
    actions = dist.sample()
    assert actions.shape == (64,) and 0 <= actions.min() and actions.max() < NUM_SUBSETS
    greedy = dist.to_deterministic().sample()
    assert torch.equal(greedy, logits[Columns.ACTION_DIST_INPUTS].argmax(-1))
    # an untrained policy is close to uniform over the subsets (small policy-head init)
    probs = torch.softmax(logits[Columns.ACTION_DIST_INPUTS], -1)
    assert probs.max() < 2.0 / NUM_SUBSETS


def test_hidden_sizes_come_from_model_config():
    module = build_level_module(OBS_DIM, [11, 13, 5])
    widths = [layer.out_features for layer in module._encoder if hasattr(layer, "out_features")]
    assert widths == [11, 13, 5]


def test_policy_levels_has_the_optional_selector_capabilities(module):
    """The distillation loop finds them through the protocols, not by probing attributes."""
    selector = PolicyLevels(module, (4.0, 8.0, 16.0))
    assert isinstance(selector, StudentObservingSelector)
    assert isinstance(selector, StatefulSelector)
    assert isinstance(selector, FingerprintedSelector)
    assert selector_key(selector) == "policy"  # no fingerprint given: the name
    sampled = PolicyLevels(module, (4.0, 8.0, 16.0), greedy=False, fingerprint="policy:abc")
    assert sampled.name == "policy:sampled" and selector_key(sampled) == "policy:abc"


def test_weights_file_round_trip_and_mismatch(tmp_path, module):
    path = save_weights_file(
        tmp_path / "w.pt", module.state_dict(), OBS_DIM, [16, 8], {"tasks": ["a"]}
    )
    weights = read_weights_file(path)
    assert weights.obs_dim == OBS_DIM and weights.hidden_sizes == [16, 8]
    assert weights.metadata == {"tasks": ["a"]}
    loaded = module_from_weights_file(path)
    obs = torch.randn(9, OBS_DIM)
    torch.testing.assert_close(loaded.subset_logits(obs), module.subset_logits(obs))

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        read_weights_file(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="not found"):
        read_weights_file(tmp_path / "missing.pt")
    bad = save_weights_file(tmp_path / "bad.pt", module.state_dict(), OBS_DIM, [16, 9])
    with pytest.raises(UserError, match="shape"):
        module_from_weights_file(bad)


def _batch(n: int) -> DetectionBatch:
    return DetectionBatch(
        images=torch.zeros(n, 3, 32, 32),
        boxes=torch.zeros(n, 1, 4),
        labels=torch.zeros(n, 1, dtype=torch.long),
        image_ids=torch.arange(n),
        scales=torch.ones(n),
    )


def test_policy_levels_picks_the_greedy_subset_from_student_only_observations(module):
    seen = {}
    features = torch.randn(6, OBS_DIM)

    def observe(student, batch, running_gap, progress, thresholds):
        seen.update(student=student, progress=progress, thresholds=thresholds, gap=running_gap)
        return features[: len(batch)]

    student = torch.nn.Linear(1, 1)
    selector = PolicyLevels(module, (4.0, 8.0, 16.0), observe=observe)
    with pytest.raises(RuntimeError, match="set_student"):
        selector.select(_batch(6), 0.5)
    selector.set_student(student)
    mask = selector.select(_batch(6), 0.25)
    assert mask.shape == (6, 4) and mask.dtype == torch.bool
    assert torch.equal(mask, subsets_to_masks(module.subset_logits(features).argmax(-1)))
    assert seen["student"] is student and seen["progress"] == 0.25
    assert seen["thresholds"] == (4.0, 8.0, 16.0) and seen["gap"].shape == (4,)
    assert not any(p.requires_grad for p in module.parameters())


def test_sampled_policy_levels_follow_the_policy_distribution(module):
    with torch.no_grad():
        module._policy_head.bias.zero_()
        module._policy_head.weight.zero_()
        module._policy_head.bias[0b0101] = 3.0  # P2 + P4 preferred
    features = torch.randn(4000, OBS_DIM)
    selector = PolicyLevels(
        module,
        (4.0, 8.0, 16.0),
        student=object(),
        greedy=False,
        seed=3,
        observe=lambda *a: features,
    )
    mask = selector.select(_batch(4000), 0.0).float()
    p_best = torch.softmax(module._policy_head.bias, -1)[0b0101].item()
    rate_p2 = mask[:, 0].mean().item()  # P2 is chosen in half the other subsets too
    expected_p2 = p_best + (1 - p_best) * 7 / 15
    assert abs(rate_p2 - expected_p2) < 0.03
    assert selector.name == "policy:sampled"


def test_policy_levels_on_real_observations_and_resume_state(tiny_student):
    from envs.observation import observation_dim

    torch.manual_seed(0)
    module = build_level_module(observation_dim(3), [8])
    batch = _batch(3)
    batch.boxes[:, 0] = torch.tensor([2.0, 2.0, 10.0, 10.0])
    selector = PolicyLevels(module, (4.0, 8.0, 16.0), student=tiny_student, greedy=False, seed=1)
    obs = selector.observations(batch, 0.5)
    assert obs.shape == (3, observation_dim(3)) and torch.isfinite(obs).all()
    kd_raw, masks = torch.rand(3, 4) + 1.0, torch.ones(3, 4, dtype=torch.bool)
    selector.update_running_gap(kd_raw, masks)
    assert not torch.equal(selector.observations(batch, 0.5), obs)  # running gap columns moved
    state = selector.state_dict()
    first = selector.select(batch, 0.5)
    other = PolicyLevels(module, (4.0, 8.0, 16.0), student=tiny_student, greedy=False, seed=99)
    other.load_state_dict(state)
    assert torch.equal(other.select(batch, 0.5), first)  # same draws and gap after a resume
    torch.testing.assert_close(other.running_gap.scale, selector.running_gap.scale)


def test_weights_file_keeps_the_policy_head(tmp_path):
    torch.manual_seed(0)
    factorised = build_level_module(OBS_DIM, [8], policy_head="factorised")
    path = save_weights_file(
        tmp_path / "f.pt", factorised.state_dict(), OBS_DIM, [8], policy_head="factorised"
    )
    assert read_weights_file(path).policy_head == "factorised"
    loaded = module_from_weights_file(path)
    assert loaded.policy_head == "factorised"
    obs = torch.randn(4, OBS_DIM)
    torch.testing.assert_close(loaded.subset_logits(obs), factorised.subset_logits(obs))
    # the same weights labelled as a joint head do not fit it: a clear error, no silent load
    wrong = save_weights_file(tmp_path / "j.pt", factorised.state_dict(), OBS_DIM, [8])
    assert read_weights_file(wrong).policy_head == "joint"  # the default of older files
    with pytest.raises(UserError, match="rl.policy_head"):
        module_from_weights_file(wrong)


def test_unknown_policy_head_is_refused():
    with pytest.raises(UserError, match="rl.policy_head='both'"):
        build_level_module(OBS_DIM, [8], policy_head="both")
