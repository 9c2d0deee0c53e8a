"""Gymnasium/RLlib environments for per-sample pyramid-level selection (DESIGN §5).

``envs.registration.register_envs()`` registers ``LevelSelectionEnv`` with Ray Tune under
``ENV_NAME`` so that RLlib and Tune build it by name from an ``env_config`` (see
``docs/decision_process.md``).
"""
