"""Feature materialization on a Dask cluster: the transforms of ``feature_store.transforms``, per shard.

Two rounds of one task per customer shard (``compute.shards``), each in an in-memory DuckDB on a worker
holding that shard's raw rows (exported from the warehouse, :mod:`churn_assets.compute.shards`):

1. :func:`~churn_assets.feature_store.transforms.rate_counts`: the shard's active and churned customers
   per as-of date and cohort / channel (a few hundred rows), merged by the run process;
2. :func:`~churn_assets.feature_store.transforms.iter_snapshots` given the merged counts: the shard's
   feature rows, written as one Parquet file per feature group into the stage folder.

The run process then stores every shard's rows in the offline store in one transaction
(``OfflineStore.write_batches``: the same validation and replace-per-snapshot rule as the local engine),
so a stage that fails on the cluster leaves the offline store as it was.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from churn_assets.compute.shards import export_shards, load_shard, shard_input, stage_folder
from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FEATURE_GROUPS
from churn_assets.feature_store.materialize import MaterializeReport
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.feature_store.transforms import (
    WINDOW_WEEKS,
    RateCounts,
    group_schema,
    iter_snapshots,
    rate_counts,
)
from churn_assets.storage.warehouse import Warehouse
from data_contracts.raw_tables import RAW_TABLES

if TYPE_CHECKING:
    from distributed import Client


def _duckdb_config(threads: int) -> dict[str, str | bool | int | float | list[str]]:
    """DuckDB settings of a task: ``threads``, and half of the worker's memory limit (DuckDB spills to
    disk beyond it) so that DuckDB and the task's Arrow tables stay under the limit Dask enforces."""
    config: dict[str, str | bool | int | float | list[str]] = {"threads": threads}
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except ValueError:  # not in a worker (a test calling the task directly)
        limit = None
    if limit:
        config["memory_limit"] = f"{int(limit) // 2 // 2**20}MiB"
    return config


def shard_connection(
    stage: Path, shard: int, tables: Sequence[str], threads: int = 1
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the warehouse's (empty) schemas and offline store tables, and ``tables``
    (``schema.table``) filled with the rows of ``shard`` exported to ``stage`` (sorted by customer and
    time, as the warehouse keeps the offline store)."""
    con = duckdb.connect(config=_duckdb_config(threads))
    Warehouse.ensure_schemas(con)
    OfflineStore(con)  # the feature tables, and TimeZone = UTC as on the warehouse's connection
    for table in tables:
        order = f"{ENTITY}, {EVENT_TIMESTAMP}" if table.startswith("features.") else ""
        load_shard(con, table, shard_input(stage, table), shard, order_by=order)
    return con


_RAW = [f"raw.{t}" for t in RAW_TABLES]


def shard_rate_counts(stage: Path, shard: int, as_of_dates: list[dt.date], threads: int) -> RateCounts:
    """Task: the rate counts of one shard's customers."""
    con = shard_connection(stage, shard, _RAW, threads)
    try:
        return rate_counts(con, as_of_dates)
    finally:
        con.close()


def shard_snapshots_path(stage: Path, group: str, shard: int) -> Path:
    return stage / "out" / "features" / group / f"shard-{shard:05d}.parquet"


def shard_snapshots(
    stage: Path, shard: int, as_of_dates: list[dt.date], counts: RateCounts, threads: int
) -> dict[str, int]:
    """Task: one shard's feature rows at ``as_of_dates`` given the merged counts, one Parquet file per
    group (rewritten whole when the task is rerun); the rows written per group."""
    con = shard_connection(stage, shard, _RAW, threads)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = {g.name: 0 for g in FEATURE_GROUPS}
    try:
        for group in FEATURE_GROUPS:
            path = shard_snapshots_path(stage, group.name, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[group.name] = pq.ParquetWriter(path, group_schema(group.name))
        for batch in iter_snapshots(con, as_of_dates, counts=counts):
            for name, table in batch.items():
                writers[name].write_table(table)
                rows[name] += table.num_rows
    finally:
        for writer in writers.values():
            writer.close()
        con.close()
    return rows


def _stored_batches(stage: Path, shards: int) -> Iterator[dict[str, pa.Table]]:
    for shard in range(shards):
        for group in FEATURE_GROUPS:
            yield {group.name: pq.read_table(shard_snapshots_path(stage, group.name, shard))}


def materialize_offline_on_cluster(
    con: duckdb.DuckDBPyConnection,
    client: Client,
    as_of_dates: Sequence[dt.date],
    *,
    home: Path,
    shards: int,
    threads: int = 1,
) -> MaterializeReport:
    """:func:`~churn_assets.feature_store.materialize.materialize_offline` with the transforms run per
    customer shard on ``client``'s workers; the same rows in the offline store. ``report.shard_rows``:
    the customer_account rows of each shard (one row per active customer and as-of date)."""
    started = time.perf_counter()
    report = MaterializeReport(rows={g.name: 0 for g in FEATURE_GROUPS})
    dates = sorted(set(as_of_dates))
    if not dates:
        return report
    # The weekly sources are read only through the 13 landed weeks before an as-of date (transforms.py):
    # export that window; accounts and churn reports whole (who is active at a date depends on them all).
    window = (
        f"week_start BETWEEN DATE '{dates[0].isoformat()}' - {7 * (WINDOW_WEEKS + 1)} "
        f"AND DATE '{dates[-1].isoformat()}'"
    )
    with stage_folder(home, "features") as stage:
        for table in _RAW:
            whole = table in ("raw.accounts", "raw.churn_events")
            export_shards(con, table, stage, shards, where="" if whole else window)
        ids = list(range(shards))
        parts = client.gather(
            client.map(
                shard_rate_counts, [stage] * shards, ids, [dates] * shards, [threads] * shards, pure=False
            )
        )
        counts = RateCounts.merge(parts)
        written = client.gather(
            client.map(
                shard_snapshots,
                [stage] * shards,
                ids,
                [dates] * shards,
                [counts] * shards,
                [threads] * shards,
                pure=False,
            )
        )
        report.rows.update(OfflineStore(con).write_batches(_stored_batches(stage, shards)))
    report.shard_rows = [w[FEATURE_GROUPS[0].name] for w in written]
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["materialize_offline_on_cluster", "shard_connection", "shard_rate_counts", "shard_snapshots"]
