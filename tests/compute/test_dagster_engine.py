"""The Dagster assets on the Dask engine: the same assets and checks, the local engine's rows, and
metadata naming the engine, the workers and the rows of every shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from churn_assets.defs.assets.training import training_set as training_set_asset
from churn_assets.defs.keys import feature_asset_key
from churn_assets.defs.resources import build_resources
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.materialize import materialize_offline
from churn_assets.feature_store.offline import CREATED_AT
from churn_assets.modeling.training_set import build_training_table
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import ComputeSettings, ModelingSettings, Settings, SimulationSettings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from data_contracts.raw_tables import RAW_TABLES
from tests.pipeline_helpers import run, simulate

pytestmark = pytest.mark.distributed

SHARDS = 4


def _settings(home: Path, scheduler: str) -> Settings:
    return Settings(
        home=home,
        simulation=SimulationSettings(n_customers=500, history_months=4),
        compute=ComputeSettings(engine="dask", scheduler=scheduler, shards=SHARDS),
        modeling=ModelingSettings(train_periods=(1, 2), val_periods=(3, 3), test_periods=(4, 4)),
    )


def _features(con: duckdb.DuckDBPyConnection, group: str) -> pl.DataFrame:
    return con.sql(f"SELECT * EXCLUDE ({CREATED_AT}) FROM features.{group} ORDER BY ALL").pl()


def test_main_job_and_training_set_on_a_running_scheduler(tmp_path: Path, dask_client_2w):
    address = dask_client_2w.scheduler.address
    settings = _settings(tmp_path / "dask", address)
    weeks = simulate(settings)
    instance = dg.DagsterInstance.ephemeral()
    result = run(settings, weeks, instance)
    assert result.success
    # every feature group: the same asset, its metadata naming the engine, workers and shard rows
    events = result.asset_materializations_for_node("feature_groups")
    assert {e.asset_key for e in events} == {feature_asset_key(g.name) for g in FEATURE_GROUPS}
    for event in events:
        meta = {k: v.value for k, v in event.metadata.items()}
        assert meta["engine"] == f"dask {address}" and meta["workers"] == 2 and meta["shards"] == SHARDS
        assert len(meta["shard_rows"]) == SHARDS and all(n > 0 for n in meta["shard_rows"])
    for table in RAW_TABLES:
        for event in result.asset_materializations_for_node(f"raw__{table}"):
            meta = {k: v.value for k, v in event.metadata.items()}
            assert meta["engine"] == f"dask {address}" and meta["workers"] == 2
            assert sum(meta["shard_rows"]) == meta["rows_in"] and len(meta["shard_rows"]) == SHARDS
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)

    # the local engine's features on a copy of the same raw tables
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(settings.warehouse_path, local / "warehouse.duckdb")
    timeline = Timeline.from_settings(settings.simulation)
    local_settings = settings.model_copy(update={"home": local})
    with duckdb.connect(str(local / "warehouse.duckdb")) as con:
        dates = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT event_timestamp::DATE FROM features.customer_usage"
            ).fetchall()
        ]
        materialize_offline(con, dates)  # replaces every snapshot the dask engine stored
        local_features = {g.name: _features(con, g.name) for g in FEATURE_GROUPS}
        local_frame, local_meta = build_training_table(con, timeline, local_settings)
    with Warehouse.of(settings).connect(read_only=True) as con:
        for group in FEATURE_GROUPS:
            assert _features(con, group.name).equals(local_features[group.name]), group.name

    # the training set asset: the shards on the cluster, the local rows and metadata
    trained = dg.materialize([training_set_asset], resources=build_resources(settings), instance=instance)
    assert trained.success
    meta = {
        k: v.value
        for k, v in trained.asset_materializations_for_node(training_set_asset.op.name)[0].metadata.items()
    }
    assert meta["engine"] == f"dask {address}" and meta["shard_rows"] == local_meta["shard_rows"]
    assert meta["data_sha256"] == local_meta["sha256"]
    workdir = TrainingWorkdir.of(settings)
    assert workdir.training_set.is_dir()
    keys = ["customer_id", "as_of"]
    assert pl.read_parquet(workdir.training_set).sort(keys).equals(local_frame.sort(keys))
