"""train_rl end to end on a tiny config: report, decision log, heatmaps, resume without redoing work."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from envs.observation import observation_dim
from experiments.controls import policy_selector
from experiments.rl_pipeline import POLICY_METHOD, run_rl_experiment
from policies.level_policy_module import build_level_module
from policies.policy_selector import PolicyLevels
from policies.weights import save_weights_file
from rlpkd.levels import mask_to_levels
from rlpkd.report.decision_log import read_decisions
from rlpkd.report.verification import SAME_FLOPS_TOLERANCE
from rlpkd.training.student_phase import selector_key
from tests.conftest import distil_on_cpu, tiny_distillation_inputs, tiny_rl_config


@pytest.mark.slow
def test_policy_guided_flops_equal_the_flops_model_of_the_chosen_subsets(tiny_config):
    from policies.level_policy_module import build_level_module
    from policies.policy_selector import PolicyLevels

    datasets, teacher, flops = tiny_distillation_inputs(tiny_config)
    selector = PolicyLevels(
        build_level_module(observation_dim(datasets.num_classes), [8]),
        tiny_config.data.level_thresholds,
        greedy=False,
    )
    masks = []
    _, _, stats = distil_on_cpu(
        tiny_config,
        datasets,
        teacher,
        selector,
        flops,
        on_step=lambda step, batch, mask, terms: masks.append(mask),
    )
    expected = sum(flops.kd_flops(mask_to_levels(row)) for row in torch.cat(masks))
    assert abs(stats.kd_flops - expected) <= 1e-6 * max(expected, 1.0)
    assert len({tuple(row.tolist()) for row in torch.cat(masks)}) > 1  # per-sample choices


def test_policy_selector_is_fingerprinted_by_its_weights_file(tiny_config, tmp_path):
    keys = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = build_level_module(observation_dim(3), [8]).state_dict()
        path = save_weights_file(tmp_path / f"w{seed}.pt", state, observation_dim(3), [8])
        selector = policy_selector(tiny_config, path, seed=0)
        assert isinstance(selector, PolicyLevels) and selector.name == POLICY_METHOD
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        keys.append(selector_key(selector))
        assert keys[-1] == f"{POLICY_METHOD}:{digest}:greedy={tiny_config.rl.greedy}"
    assert keys[0] != keys[1]


@pytest.mark.slow
def test_train_rl_end_to_end_and_resume(tiny_config, tmp_path):
    config = tiny_rl_config(tiny_config)
    # the controls run on the first seed only (experiment.control_seeds), the rest on both;
    # two student worker processes (runtime.student_workers), each with a teacher cache; a
    # headroom report whose oracle (the tiny data is one 'mixed' regime) distils P3
    headroom = tmp_path / "headroom.json"
    headroom.write_text(
        json.dumps(
            {
                "best_subset_by_regime": {"mixed": {"levels": "P3"}},
                "teacher": {"AP": 0.25},
                "comparison": {"oracle_minus_best_static": {"mean": 0.01, "std": 0.0}},
            }
        )
    )
    experiment = dataclasses.replace(
        config.experiment, seeds=[0, 1], control_seeds=[0], headroom_report=str(headroom)
    )
    runtime = dataclasses.replace(config.runtime, student_workers=2, teacher_cache_gb=0.5)
    config = dataclasses.replace(config, experiment=experiment, runtime=runtime)
    report = run_rl_experiment(config)
    out = config.runtime.out
    from pathlib import Path

    out = Path(out)
    methods = {row["method"] for row in report["methods"]}
    # the controls table's entries at a fixed price (shuffled masks and random subsets at its
    # FLOPs), the scale rule and the static baselines
    assert {POLICY_METHOD, "none", "all", "P3", "scale-rule", "oracle"} <= methods
    shuffled_method = next(m for m in methods if m.startswith("shuffled@"))
    assert any(m.startswith("random-subsets@") for m in methods)
    rows = {row["method"]: row for row in report["methods"]}
    for method in (POLICY_METHOD, "none", "all"):
        assert rows[method]["seeds"] == [0, 1], method
    controls = [m for m in methods if m not in (POLICY_METHOD, "none", "all")]
    assert all(rows[m]["seeds"] == [0] for m in controls), {m: rows[m]["seeds"] for m in controls}
    # the oracle's table gives every (one-regime) image P3: the P3 control's FLOPs
    assert rows["oracle"]["kd_gflops_mean"] == pytest.approx(rows["P3"]["kd_gflops_mean"])
    assert report["headroom_report"] == str(headroom) and report["oracle_table"] == "mixed=P3"
    assert report["headroom_teacher_AP"] == 0.25
    shuffled = rows[shuffled_method]
    policy_seed0 = json.loads(
        (out / "students" / f"{POLICY_METHOD}-seed0" / "metrics.json").read_text()
    )
    # close, not exact: see tests/experiments/tune/test_trials.py (the students drift apart)
    assert shuffled["kd_gflops_mean"] == pytest.approx(policy_seed0["kd_gflops"], rel=0.05)
    best = report["best_static_at_policy_flops"]
    cheap = [
        m
        for m in ("none", "all", "P3")
        if rows[m]["kd_gflops_mean"]
        <= rows[POLICY_METHOD]["kd_gflops_mean"] * (1 + SAME_FLOPS_TOLERANCE) + 1e-9
    ]
    assert best in cheap and all(rows[best]["AP_mean"] >= rows[m]["AP_mean"] for m in cheap)
    assert report["policy_subset_regime_mi_bits"] >= 0.0
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()
    decisions = read_decisions(out / "students" / f"{POLICY_METHOD}-seed0" / "decisions.jsonl")
    steps = len(decisions) // config.student_schedule.batch_size
    assert len(decisions) == steps * config.student_schedule.batch_size > 0
    counts = report["heatmap_counts"]["size"]
    assert sum(counts["decisions"]) == len(decisions)
    p2_selected = sum(1 for record in decisions if "P2" in record["levels"])
    assert sum(counts["selected"]["P2"]) == p2_selected
    for key in ("size", "class", "progress"):
        assert (out / "plots" / f"selection_by_{key}.png").is_file()
    policy_metrics = json.loads(
        (out / "students" / f"{POLICY_METHOD}-seed0" / "metrics.json").read_text()
    )
    rates = policy_metrics["selection_rates"]
    assert rates["P2"] == p2_selected / len(decisions)

    history = json.loads((out / "checkpoints" / "policy" / "progress.json").read_text())
    assert history["iteration"] == 2
    _assert_phase2_records(out, config.rl.iterations)
    mtime = (out / "students" / "all-seed0" / "metrics.json").stat().st_mtime
    run_rl_experiment(config, resume=True)
    history = json.loads((out / "checkpoints" / "policy" / "progress.json").read_text())
    assert history["iteration"] == 2 and len(history["history"]) == 2
    assert (out / "students" / "all-seed0" / "metrics.json").stat().st_mtime == mtime
    _assert_phase2_records(out, config.rl.iterations)  # the resume kept, not redid, them


def _assert_phase2_records(out, iterations):
    """What Phase 2 records: policy_learning.json (one summary per iteration, with PPO's
    learner statistics), TensorBoard ``policy/...`` scalars (once per iteration) and the plot."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    learning = json.loads((out / "policy_learning.json").read_text())
    history = learning["history"]
    assert [h["iteration"] for h in history] == list(range(1, iterations + 1))
    for summary in history:
        for key in (
            "episode_return_mean",
            "learner/policy_loss",
            "learner/vf_loss",
            "learner/entropy",
            "learner/mean_kl_loss",
            *(f"level_selection/rate_{level}" for level in ("P2", "P3", "P4", "P5")),
        ):
            assert isinstance(summary[key], float), (key, summary.get(key))
    assert {"learning_time_s", "weights", "reward_signal_gflops_per_decision"} <= set(learning)
    # learning measured on held-out contexts after every iteration, and a verdict
    for summary in history:
        for key in ("heldout_score", "heldout_static_score", "heldout_predictor_score"):
            assert isinstance(summary[key], float), (key, summary.get(key))
    assert learning["learner"] == "bank" and learning["decision_bank"]["contexts"] == 16
    # the policy is the iteration that scored best on the validation contexts (early stopping)
    scores = [h["validation_score"] for h in history]
    selected = learning["selected_iteration"]
    assert scores[selected - 1] == max(scores) and scores.index(max(scores)) == selected - 1
    from policies.weights import read_weights_file

    weights = read_weights_file(out / "checkpoints" / "policy_weights.pt")
    best = read_weights_file(out / "checkpoints" / "policy" / "best_weights.pt")
    assert weights.metadata["selected_iteration"] == best.metadata["iteration"] == selected
    for name, value in best.state.items():
        assert torch.equal(weights.state[name], value), name
    assert learning["verdict"]["status"] in ("did not learn", "learnt a per-sample choice")
    report = (out / "report.md").read_text()
    assert report.index("## Did Phase 2 learn?") < report.index("| method |")
    assert learning["verdict"]["sentence"] in report

    events = EventAccumulator(str(out / "tensorboard" / "policy"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"policy/return", "policy/policy_loss", "policy/value_loss", "policy/entropy"}
    expected |= {"policy/kl", *(f"policy/selection_rate_{lv}" for lv in ("P2", "P3", "P4", "P5"))}
    expected |= {"policy/heldout_score", "policy/heldout_static_score", "policy/heldout_entropy"}
    assert expected <= tags, expected - tags
    for tag in expected:
        assert [e.step for e in events.Scalars(tag)] == list(range(1, iterations + 1)), tag
    entropy = [e.value for e in events.Scalars("policy/entropy")]
    assert entropy == pytest.approx([h["learner/entropy"] for h in history], rel=1e-6)
    assert (out / "plots" / "policy_learning.png").read_bytes()[:4] == b"\x89PNG"


def test_a_headroom_report_that_does_not_fit_the_data_is_refused_before_any_write(
    tiny_config, tmp_path
):
    from rlpkd.errors import ConfigError

    headroom = tmp_path / "headroom.json"
    headroom.write_text(json.dumps({"best_subset_by_regime": {"small-only": {"levels": "P2"}}}))
    config = tiny_rl_config(tiny_config)
    experiment = dataclasses.replace(config.experiment, headroom_report=str(headroom))
    config = dataclasses.replace(config, experiment=experiment)
    with pytest.raises(ConfigError, match=r"experiment.headroom_report: .*headroom.json"):
        run_rl_experiment(config)
    missing = dataclasses.replace(experiment, headroom_report=str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="absent.json does not exist"):
        run_rl_experiment(dataclasses.replace(config, experiment=missing))
    headroom.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        run_rl_experiment(config)
    from pathlib import Path

    assert not Path(config.runtime.out).exists()
