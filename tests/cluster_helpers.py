"""Tiny worlds for the Dask-engine tests: a warehouse with raw tables, the local engine's results."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import polars as pl

from churn_assets.feature_store.offline import CREATED_AT
from churn_assets.feature_store.transforms import load_landing_into_duckdb
from churn_assets.settings import ComputeSettings, ModelingSettings, Settings, SimulationSettings
from churn_assets.simulation import World
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline


def tiny_settings(
    home: Path, *, shards: int = 3, scheduler: str = "local:2", customers: int = 600
) -> Settings:
    """A tiny world (4 snapshot months) on the dask engine, with splits that its periods fill."""
    return Settings(
        home=home,
        simulation=SimulationSettings(n_customers=customers, history_months=4),
        compute=ComputeSettings(engine="dask", scheduler=scheduler, shards=shards),
        modeling=ModelingSettings(train_periods=(1, 2), val_periods=(3, 3), test_periods=(4, 4)),
    )


def raw_warehouse(home: Path) -> Path:
    """Simulate the tiny world's history under ``home`` and load its landing files into the warehouse
    (no features yet); returns ``home``."""
    settings = tiny_settings(home)
    World.create(settings.simulation).simulate_history(settings.landing_dir)
    with Warehouse.of(settings).connect() as con:
        load_landing_into_duckdb(con, settings.landing_dir)
    return home


def copy_world(source: Path, home: Path, **kwargs: object) -> Settings:
    """A fresh home holding a copy of ``source``'s warehouse; its tiny settings."""
    home.mkdir(parents=True)
    shutil.copy(source / "warehouse.duckdb", home / "warehouse.duckdb")
    return tiny_settings(home, **kwargs)  # type: ignore[arg-type]


def snapshot_dates(settings: Settings, con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The as-of dates of every landed week (what the feature asset computes for all partitions)."""
    timeline = Timeline.from_settings(settings.simulation)
    weeks = [r[0] for r in con.execute("SELECT DISTINCT week_start FROM raw.usage").fetchall()]
    return sorted({d for w in weeks if (d := timeline.snapshot_for_week(w)) is not None})


def stored_features(con: duckdb.DuckDBPyConnection, group: str) -> pl.DataFrame:
    """A group's offline rows without the wall-clock ``created_at``, sorted."""
    return con.sql(f"SELECT * EXCLUDE ({CREATED_AT}) FROM features.{group} ORDER BY ALL").pl()
