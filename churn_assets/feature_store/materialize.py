"""Materialization: raw tables -> offline store (snapshots) -> online store (latest values)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from churn_assets.feature_store.definitions import EVENT_TIMESTAMP, FEATURE_GROUPS
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.feature_store.online import OnlineStore
from churn_assets.feature_store.transforms import iter_snapshots

log = logging.getLogger(__name__)


@dataclass
class MaterializeReport:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    as_of: dt.datetime | None = None
    customers: int = 0
    retired: dict[str, list[str]] = field(default_factory=dict)
    shard_rows: list[int] = field(default_factory=list)  # per customer shard, on a Dask cluster


def materialize_offline(con: duckdb.DuckDBPyConnection, as_of_dates: Sequence[dt.date]) -> MaterializeReport:
    """Compute the snapshots as of ``as_of_dates`` and write them to the offline store."""
    started = time.perf_counter()
    report = MaterializeReport(rows={g.name: 0 for g in FEATURE_GROUPS})
    if as_of_dates:
        # A few dates per pass, staged in DuckDB as they come: Python never holds all snapshots.
        report.rows.update(OfflineStore(con).write_batches(iter_snapshots(con, list(as_of_dates))))
    report.seconds = time.perf_counter() - started
    log.info("offline store: %d snapshot(s), %s rows per group", len(as_of_dates), report.rows)
    return report


def materialize_online(
    con: duckdb.DuckDBPyConnection,
    online: OnlineStore,
    retired: Mapping[str, Sequence[str]] | None = None,
) -> MaterializeReport:
    """Write each group's newest snapshot (the customers active then) to the online store.

    The clock is the newest snapshot time in the offline store, which in the simulated world is
    "now"; each group is written with the values of its own newest snapshot. ``retired``
    (``{group: [feature, ...]}``, e.g. ``lifecycle.deprecated_features``): features written as null —
    retired from serving, still in the offline store.
    """
    started = time.perf_counter()
    offline = OfflineStore(con)
    report = MaterializeReport()
    customers: set[int] = set()
    for group in FEATURE_GROUPS:
        times = offline.snapshot_times(group.name)
        if not times:
            report.rows[group.name] = 0
            continue
        newest = max(times)
        table = offline.latest(group.name, as_of=newest)
        table = table.filter(pc.equal(table[EVENT_TIMESTAMP], newest))
        for feature in (retired or {}).get(group.name, ()):
            i = table.schema.get_field_index(feature)
            table = table.set_column(
                i, table.schema.field(i), pa.nulls(table.num_rows, table.schema.field(i).type)
            )
            report.retired.setdefault(group.name, []).append(feature)
        report.rows[group.name] = online.write(group.name, table, now=newest)
        customers.update(table["customer_id"].to_pylist())
        report.as_of = max(report.as_of or newest, newest)
    report.customers = len(customers)
    report.seconds = time.perf_counter() - started
    return report
