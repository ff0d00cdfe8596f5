"""A tiny production world with a registered champion, for the monitoring tests.

The champion is a small LightGBM fitted directly on the training set's train split and registered +
promoted through the real registry (the full training graph — Optuna, baselines, gates — is tested in
tests/model/test_training_e2e.py and is too slow to repeat here).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np

from churn_assets.defs.resources import build_resources
from churn_assets.modeling.reference import register_champion
from churn_assets.orchestration import run_pipeline
from churn_assets.settings import ModelingSettings, Settings, SimulationSettings
from churn_assets.simulation import World


def tiny_settings(home: Path, customers: int = 1_500, months: int = 4, **simulation: object) -> Settings:
    return Settings(
        home=home,
        simulation=SimulationSettings(n_customers=customers, history_months=months, **simulation),  # type: ignore[arg-type]
        modeling=ModelingSettings(train_periods=(1, 2), val_periods=(3, 3), test_periods=(4, 4)),
    )


def all_resources(settings: Settings) -> dict[str, object]:
    return build_resources(settings)


QUICK_PARAMS = {"n_estimators": 60, "num_leaves": 15, "min_child_samples": 50, "n_jobs": 1, "verbose": -1}


def register_quick_champion(settings: Settings) -> str:
    """A small LightGBM on the train split, registered and promoted; returns the version."""
    return register_champion(settings, QUICK_PARAMS)


def production_world(settings: Settings, production_weeks: int) -> tuple[dg.DagsterInstance, list[str]]:
    """History + pipeline, a quick champion, then ``production_weeks`` weeks landed and processed."""
    instance = dg.DagsterInstance.ephemeral()
    world = World.create(settings.simulation)
    history = world.simulate_history(settings.landing_dir)
    assert run_pipeline(instance, history, resources=build_resources(settings)).success
    register_quick_champion(settings)
    weeks = world.advance(production_weeks, settings.landing_dir)
    world.save(settings.world_state_path)
    assert run_pipeline(instance, weeks, resources=build_resources(settings)).success
    return instance, weeks


def scores_and_labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated synthetic scores: labels drawn as Bernoulli(score)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 9.0, n)
    return p, (rng.random(n) < p).astype(int)
