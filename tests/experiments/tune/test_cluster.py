"""A sweep joins a running two-node Ray cluster and its trials run on both nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from experiments.tune.sweep import run_sweep
from rlpkd.rundir import read_json

pytestmark = pytest.mark.slow  # every test here trains, starts Ray or runs a script


def test_sweep_on_a_two_node_cluster_uses_both_nodes(make_sweep_config):
    ray.shutdown()  # an earlier test's in-process Ray (e.g. train_rl's PPO) must not be joined
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        node_ids = {cluster.head_node.node_id} | {node.node_id for node in cluster.worker_nodes}
        assert len(node_ids) == 2
        config = make_sweep_config("sweep.trial_cpus=1")
        outcome = run_sweep(config, address=cluster.address, progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()

    trials = ("baseline-none-seed0", "baseline-all-seed0")
    assert outcome["statuses"] == dict.fromkeys(trials, "TERMINATED")
    sweep = Path(config.runtime.out)
    ran_on = {read_json(sweep / "trials" / t / "metrics.json")["node_id"] for t in trials}
    # One CPU per node and one per trial: the two trials can only run side by side on two nodes.
    assert ran_on == node_ids
