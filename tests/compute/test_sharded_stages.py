"""The data stages on a real Dask cluster give the local engine's rows, row for row, on a tiny world."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

from churn_assets.compute.cluster import shard_of
from churn_assets.compute.features import materialize_offline_on_cluster
from churn_assets.compute.shards import export_shards, shard_files, shard_sql, stage_folder
from churn_assets.compute.training_set import build_training_set_on_cluster, training_set_files
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.materialize import materialize_offline
from churn_assets.modeling.training_set import build_training_table
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.cluster_helpers import copy_world, snapshot_dates, stored_features

pytestmark = pytest.mark.distributed

SHARDS = 3


def test_shard_sql_equals_shard_of(tmp_path: Path):
    con = duckdb.connect()
    ids = [1, 2, 3, 500_000, 2**40 + 7]
    got = [con.execute(f"SELECT {shard_sql(8, '$id')}", {"id": i}).fetchall()[0][0] for i in ids]
    assert got == shard_of(np.array(ids), 8).tolist()


def test_export_writes_each_customer_to_its_shard(raw_world: Path, tmp_path: Path):
    settings = copy_world(raw_world, tmp_path / "export")
    with Warehouse.of(settings).connect() as con, stage_folder(settings.home, "t") as stage:
        folder = export_shards(con, "raw.usage", stage, SHARDS)
        total = con.execute("SELECT count(*) FROM raw.usage").fetchall()[0][0]
        seen = 0
        for shard in range(SHARDS):
            part = pl.read_parquet(shard_files(folder, shard), hive_partitioning=False)
            assert set(shard_of(part["customer_id"].to_numpy(), SHARDS).tolist()) == {shard}
            seen += part.height
        assert seen == total
    assert not stage.exists()  # the exchange folder goes with the stage


def test_features_and_training_set_on_the_cluster_equal_the_local_engine(
    raw_world: Path, tmp_path: Path, dask_client_2w
):
    local, dask = copy_world(raw_world, tmp_path / "local"), copy_world(raw_world, tmp_path / "dask")
    timeline = Timeline.from_settings(local.simulation)
    with Warehouse(local.warehouse_path).connect() as con:
        dates = snapshot_dates(local, con)
        local_report = materialize_offline(con, dates)
        local_features = {g.name: stored_features(con, g.name) for g in FEATURE_GROUPS}
        local_frame, local_meta = build_training_table(con, timeline, local)
    with Warehouse(dask.warehouse_path).connect() as con:
        report = materialize_offline_on_cluster(con, dask_client_2w, dates, home=dask.home, shards=SHARDS)
        for group in FEATURE_GROUPS:
            assert stored_features(con, group.name).equals(local_features[group.name]), group.name
        assert report.rows == local_report.rows
        assert (
            sum(report.shard_rows) == local_report.rows["customer_account"]
            and len(report.shard_rows) == SHARDS
        )
        workdir = TrainingWorkdir.of(dask)
        meta = build_training_set_on_cluster(con, dask_client_2w, timeline, dask, workdir)
    assert not list((dask.home / "cluster").iterdir())  # no exchange folder left behind
    files = training_set_files(workdir.training_set)
    assert [f.name for f in files] == [f"shard-{k:05d}.parquet" for k in range(SHARDS)]
    sharded = pl.read_parquet(workdir.training_set)
    keys = ["customer_id", "as_of"]
    assert sharded.sort(keys).equals(local_frame.sort(keys))
    assert meta == local_meta
    assert meta["shard_rows"] == [pl.read_parquet(f).height for f in files]
    assert workdir.load_meta()["sha256"] == local_meta["sha256"]
    # the trainer reads the sharded set in the local file's row order: the same matrices, the same model
    local_workdir = TrainingWorkdir.of(local)
    local_workdir.write_training_set(local_frame, local_meta)
    splits, _ = workdir.load_splits()
    local_splits, _ = local_workdir.load_splits()
    for name in ("train", "val", "test"):
        X, y = splits.part(name)
        local_X, local_y = local_splits.part(name)
        pd.testing.assert_frame_equal(X, local_X)
        pd.testing.assert_series_equal(y, local_y)


def test_one_week_on_the_cluster_reads_only_its_window_and_equals_the_local_rows(
    raw_world: Path, tmp_path: Path, dask_client_2w
):
    local, dask = copy_world(raw_world, tmp_path / "local"), copy_world(raw_world, tmp_path / "dask")
    with Warehouse(local.warehouse_path).connect() as con:
        newest = snapshot_dates(local, con)[-1]
        materialize_offline(con, snapshot_dates(local, con))
        expected = {g.name: stored_features(con, g.name) for g in FEATURE_GROUPS}
    with Warehouse(dask.warehouse_path).connect() as con:
        materialize_offline_on_cluster(con, dask_client_2w, [newest], home=dask.home, shards=SHARDS)
        for group in FEATURE_GROUPS:
            got = stored_features(con, group.name)
            assert set(got["event_timestamp"].dt.date().to_list()) == {newest}
            want = expected[group.name].filter(pl.col("event_timestamp").dt.date() == newest)
            assert got.equals(want), group.name
