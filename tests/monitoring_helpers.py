"""A tiny production world with a registered champion, for the monitoring tests.

The champion is a small LightGBM fitted directly on the training set's train split and registered +
promoted through the real registry (the full training graph — Optuna, baselines, gates — is tested in
tests/model/test_training_e2e.py and is too slow to repeat here).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np

from churn_assets.defs.resources import build_resources
from churn_assets.modeling.reference import register_champion
from churn_assets.orchestration import register_weeks, run_pipeline
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


class HistoryCache:
    """Simulated histories run through the main job, built once per session and copied into each world.

    ``root`` may be shared by the processes of one pytest-xdist session (``tests/conftest.py``'s ``history_cache``): a
    history is built by the first process that needs it, under a file lock, and copied by all.

    The main job (raw + features groups) reads the simulation, feature-store, compute and contract
    settings only (the cache key), and writes the landing files, the warehouse and the online store under ``home``, none of which holds
    an absolute path; so the files a history left under one home are what simulating and running it under
    another home would leave. A world gets a copy of them, the saved simulation state and its weeks as
    partitions of its own instance (the runs' assets are MaterializeResults: no output lives in a Dagster
    instance). Nothing of MLflow is cached: its store holds absolute artifact paths.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def history(self, settings: Settings, instance: dg.DagsterInstance) -> list[str]:
        """``settings``' history simulated and run through the main job under ``settings.home``; its weeks."""
        shared = settings.model_dump(
            mode="json", include={"simulation", "feature_store", "compute", "contracts"}
        )
        key = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]
        built, weeks_file = self.root / key, self.root / f"{key}.weeks.json"
        with (self.root / f"{key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist: one process builds it, the others wait for it
            if not built.exists():
                staging = self.root / f"{key}.staging"
                shutil.rmtree(staging, ignore_errors=True)
                source = settings.model_copy(update={"home": staging})
                world = World.create(source.simulation)
                weeks = world.simulate_history(source.landing_dir)
                world.save(source.world_state_path)
                ran = run_pipeline(dg.DagsterInstance.ephemeral(), weeks, resources=build_resources(source))
                assert ran.success
                weeks_file.write_text(json.dumps(weeks))
                staging.rename(built)
        shutil.copytree(built, settings.home, dirs_exist_ok=True)
        weeks = json.loads(weeks_file.read_text())
        register_weeks(instance, weeks)
        return weeks


def production_world(
    settings: Settings, production_weeks: int, histories: HistoryCache
) -> tuple[dg.DagsterInstance, list[str]]:
    """History + pipeline (from ``histories``), a quick champion, then ``production_weeks`` weeks landed
    and processed."""
    instance = dg.DagsterInstance.ephemeral()
    histories.history(settings, instance)
    register_quick_champion(settings)
    world = World.load(settings.world_state_path)
    weeks = world.advance(production_weeks, settings.landing_dir)
    world.save(settings.world_state_path)
    assert run_pipeline(instance, weeks, resources=build_resources(settings)).success
    return instance, weeks


def scores_and_labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated synthetic scores: labels drawn as Bernoulli(score)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 9.0, n)
    return p, (rng.random(n) < p).astype(int)
