"""Phase 2's early stopping keeps the best validation iteration, across a resume."""

from __future__ import annotations

import torch

from experiments.policy_environment import BestIteration
from policies.level_policy_module import build_level_module
from policies.weights import read_weights_file
from rlpkd.config import Config


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_level_module(5, [4]).state_dict()


def test_the_best_validation_iteration_is_kept_and_survives_a_resume(tmp_path):
    config = Config()
    config.rl.hidden_sizes = [4]
    path = tmp_path / "best.pt"
    keep = BestIteration(path, "fp", 5, config)
    for iteration, score in ((1, 0.1), (2, 0.4), (3, 0.4), (4, 0.2)):
        keep.offer(iteration, score, _state(iteration))
    assert (keep.iteration, keep.score) == (2, 0.4)  # a tie keeps the earlier iteration
    saved = read_weights_file(path)
    assert saved.metadata["iteration"] == 2
    assert all(torch.equal(saved.state[k], v) for k, v in _state(2).items())

    history = [{"iteration": i, "validation_score": s} for i, s in ((1, 0.1), (2, 0.4), (4, 0.2))]
    resumed = BestIteration(path, "fp", 5, config)
    resumed.restore(history)
    assert (resumed.iteration, resumed.score) == (2, 0.4)
    resumed.offer(5, 0.3, _state(5))
    assert resumed.iteration == 2  # not better than the restored best
    # another policy's file (other fingerprint) is not restored
    other = BestIteration(path, "another", 5, config)
    other.restore(history)
    assert other.iteration == 0
