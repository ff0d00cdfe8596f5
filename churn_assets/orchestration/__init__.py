"""The application layer's run orchestration: Dagster jobs launched from Python, the daemon-driven demo
and run summaries. It may import both the domain and the Dagster code location (``churn_assets.defs``);
nothing below it imports it (import-linter contracts in pyproject.toml)."""

from churn_assets.orchestration.runs import (
    QUIET_CONSOLE,
    instance_for,
    load_definitions,
    prepare_dagster_home,
    register_weeks,
    run_pipeline,
    run_training,
)

__all__ = [
    "QUIET_CONSOLE",
    "instance_for",
    "load_definitions",
    "prepare_dagster_home",
    "register_weeks",
    "run_pipeline",
    "run_training",
]
