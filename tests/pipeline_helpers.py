"""Build a small simulated world and run the main Dagster job on it (shared by e2e tests)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from churn_assets.defs.resources import build_resources
from churn_assets.orchestration import run_pipeline, run_training
from churn_assets.settings import FeatureStoreSettings, Settings, SimulationSettings
from churn_assets.simulation import World


def small_settings(home: Path, *, customers: int = 1_500, months: int = 4, **fs: object) -> Settings:
    """A quick world: few customers and few snapshot months (history ~ 13 + 17 + 13 weeks)."""
    return Settings(
        home=home,
        simulation=SimulationSettings(n_customers=customers, history_months=months),
        feature_store=FeatureStoreSettings(**fs),  # type: ignore[arg-type]
    )


def simulate(settings: Settings) -> list[str]:
    world = World.create(settings.simulation)
    weeks = world.simulate_history(settings.landing_dir)
    world.save(settings.world_state_path)
    return weeks


def run(settings: Settings, weeks: list[str], instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return run_pipeline(instance, weeks, resources=build_resources(settings))


def simulated_instance(settings: Settings) -> dg.DagsterInstance:
    """A fresh in-memory instance on which ``settings``' world was simulated and run through the main job."""
    instance = dg.DagsterInstance.ephemeral()
    assert run(settings, simulate(settings), instance).success
    return instance


def train(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The ``training`` job on ``instance`` with the resources of ``settings`` (failures are returned)."""
    return run_training(instance, resources=build_resources(settings))
