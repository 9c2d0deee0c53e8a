"""The sweep's trial scheduler: FIFO, or ASHA on the RL trials with one ASHA per λ (DESIGN §8).

``build_scheduler`` turns ``config.sweep`` into the scheduler ``run_sweep`` hands to Tune;
``RLTrialsASHA`` stops RL trials early on their PPO return and lets every other trial run.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rlpkd.config import Config
from rlpkd.errors import ConfigError

__all__ = [
    "POLICY_RETURN",
    "TIME_ATTR",
    "RLTrialsASHA",
    "trial_spec_values",
    "build_scheduler",
]

POLICY_RETURN = "policy_return"
"""The metric RL trials report after every PPO iteration (ASHA's metric)."""
TIME_ATTR = "training_iteration"
"""ASHA's time attribute: the PPO iteration an RL trial reports with its return."""


def trial_spec_values(trial: Any) -> dict[str, Any]:
    """The ``TrialSpec`` values of a Tune trial (its ``config["trial"]``; {} when it has none)."""
    return (getattr(trial, "config", None) or {}).get("trial") or {}


class RLTrialsASHA(FIFOScheduler):
    """ASHA (Li et al., 2020) on the RL trials' PPO return; every other trial runs as in FIFO.

    Only RL trials report a training curve, so only they can be stopped early. Their returns
    include the FLOPs penalty -λ·kd_flops/kd_flops(all), so returns of different λ are not
    comparable: each λ gets its own ASHA, and a trial competes only with the other seeds of its
    λ (one ASHA over every λ would stop the high-λ trials and cut the Pareto front short).

    Each λ's ASHA is a plain ``ASHAScheduler`` driven only through its public scheduler hooks
    (``on_trial_add``, ``on_trial_result``, ``on_trial_complete``, ``on_trial_remove``,
    ``debug_string``); which RL trials it holds is recorded here, so each trial is added once
    (also one restored by ``--resume``) and is removed exactly once.

    ASHA's ``stop_last_trials`` is off: with ``max_t = rl.iterations`` it would stop every
    surviving trial at its last PPO iteration, before its policy-guided student is trained.

    The scheduler itself declares no metric (``self.metric`` is None): Tune's strict metric check
    would otherwise reject the single final result of a static, baseline or NAS trial for lacking
    ``policy_return`` and abort the whole experiment (``TuneController._validate_result_metrics``
    raises, and the controller turns that into a TuneError of ``fit``).
    """

    def __init__(self, grace_period: int, reduction_factor: float, max_t: int) -> None:
        super().__init__()
        self.grace_period = int(grace_period)
        self.reduction_factor = float(reduction_factor)
        self.max_t = int(max_t)
        self._by_lam: dict[float, ASHAScheduler] = {}
        self._lam_of_trial: dict[str, float] = {}  # the RL trials the ASHAs hold now: their λ

    def asha_for_lam(self, lam: float) -> ASHAScheduler:
        """The ASHA of the RL trials at ``lam`` (created on first use)."""
        if lam not in self._by_lam:
            self._by_lam[lam] = ASHAScheduler(
                time_attr=TIME_ATTR,
                metric=POLICY_RETURN,
                mode="max",
                max_t=self.max_t,
                grace_period=self.grace_period,
                reduction_factor=self.reduction_factor,
                stop_last_trials=False,
            )
        return self._by_lam[lam]

    def _asha(self, tune_controller: Any, trial: Trial) -> ASHAScheduler | None:
        """The ASHA of an RL trial, which now holds the trial; None for any other trial."""
        values = trial_spec_values(trial)
        if values.get("kind") != "rl":
            return None
        lam = float(values["lam"])
        asha = self.asha_for_lam(lam)
        if trial.trial_id not in self._lam_of_trial:  # Tune adds a retried trial again
            asha.on_trial_add(tune_controller, trial)
            self._lam_of_trial[trial.trial_id] = lam
        return asha

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """An RL trial joins its λ's ASHA."""
        self._asha(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        """Its λ's ASHA decides for an RL trial; any other trial continues."""
        asha = self._asha(tune_controller, trial)
        if asha is None:
            return TrialScheduler.CONTINUE
        return asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        """An RL trial leaves its λ's ASHA; a last result on the curve is recorded first."""
        asha = self._asha(tune_controller, trial)
        if asha is None:
            return
        del self._lam_of_trial[trial.trial_id]
        if TIME_ATTR in result and POLICY_RETURN in result:
            asha.on_trial_complete(tune_controller, trial, result)
        else:
            # ASHA ignores (and keeps holding) a trial whose last result is off its curve, as
            # the final metrics of a trial that trained its student are: remove it instead.
            asha.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        """An RL trial leaves its λ's ASHA."""
        asha = self._asha(tune_controller, trial)
        if asha is not None:
            del self._lam_of_trial[trial.trial_id]
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        """One line per λ: the state of its ASHA."""
        parts = [f"λ={lam:g}: {asha.debug_string()}" for lam, asha in sorted(self._by_lam.items())]
        return " ".join(["ASHA on the RL trials, one per λ.", *parts])


def build_scheduler(config: Config) -> FIFOScheduler:
    """FIFO, or ASHA on the RL trials (``RLTrialsASHA``); bad ASHA settings raise ConfigError."""
    sweep = config.sweep
    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    if sweep.asha_grace_period < 1 or sweep.asha_reduction_factor < 2:
        raise ConfigError(
            "sweep: ASHA needs asha_grace_period >= 1 and asha_reduction_factor >= 2, got "
            f"{sweep.asha_grace_period} and {sweep.asha_reduction_factor}"
        )
    if config.sweep.rl_lams and sweep.asha_grace_period > config.rl.iterations:
        raise ConfigError(
            f"sweep.asha_grace_period ({sweep.asha_grace_period}) must not exceed "
            f"rl.iterations ({config.rl.iterations}); lower it or use sweep.scheduler=fifo"
        )
    max_t = max(config.rl.iterations, sweep.asha_grace_period)
    return RLTrialsASHA(sweep.asha_grace_period, sweep.asha_reduction_factor, max_t)
