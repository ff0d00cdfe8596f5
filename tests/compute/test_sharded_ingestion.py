"""Raw ingestion and contract validation per customer shard on a Dask cluster: the local engine's raw
rows, quarantine rows and report counts, also for broken files and keys repeated across shards."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from churn_assets.compute.cluster import shard_of
from churn_assets.compute.ingestion import ingest_partitions_on_cluster, row_shards
from churn_assets.compute.shards import cluster_root
from churn_assets.ingestion.ingest import BatchRejected, IngestReport, ingest_partitions
from churn_assets.settings import SimulationSettings
from churn_assets.simulation import World
from churn_assets.storage.warehouse import Warehouse
from data_contracts.raw_tables import RAW_TABLES

pytestmark = pytest.mark.distributed

SHARDS = 3


def _week_files(landing: Path, table: str) -> list[Path]:
    return sorted((landing / table).glob("*.parquet"))


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world's landing folder with broken rows and files of every kind."""
    folder = tmp_path_factory.mktemp("landing")
    World.create(SimulationSettings(n_customers=300, history_months=4)).simulate_history(folder)
    billing = _week_files(folder, "billing")
    frame = pl.read_parquet(billing[20])
    customer_shards = shard_of(frame["customer_id"].to_numpy(), SHARDS)
    a, b = int(np.flatnonzero(customer_shards != customer_shards[0])[0]), 0
    frame = frame.with_columns(
        # row 0's invoice id again on a customer of another customer shard (billing is sharded by invoice)
        invoice_id=pl.when(pl.int_range(frame.height) == a)
        .then(frame["invoice_id"][b])
        .otherwise("invoice_id"),
        invoice_amount=pl.when(pl.int_range(frame.height) == 3).then(-5.0).otherwise("invoice_amount"),
        customer_id=pl.when(pl.int_range(frame.height) == 4).then(None).otherwise("customer_id"),
    )
    frame.write_parquet(billing[20])
    tickets = _week_files(folder, "support_tickets")
    earlier = pl.read_parquet(tickets[2])
    later = pl.read_parquet(tickets[9])
    later.with_columns(
        ticket_id=pl.when(pl.int_range(later.height) == 0)
        .then(earlier["ticket_id"][0])
        .otherwise("ticket_id")
    ).write_parquet(tickets[9])
    _week_files(folder, "usage")[7].write_bytes(b"not parquet at all")
    engagement = _week_files(folder, "engagement")[11]
    pl.read_parquet(engagement).clear().write_parquet(engagement)
    accounts = _week_files(folder, "accounts")[0]
    pl.read_parquet(accounts).drop("region").write_parquet(accounts)
    return folder


def _ingest(con: duckdb.DuckDBPyConnection, run) -> dict[str, IngestReport]:
    reports = {}
    for table in RAW_TABLES:
        try:
            reports[table] = run(table)
        except BatchRejected as rejected:
            reports[table] = rejected.report
    return reports


def _summary(report: IngestReport) -> tuple:
    return (
        report.rows_in,
        report.rows_accepted,
        report.rows_rejected,
        report.kept_previous,
        sorted(report.broken_files),
        sorted((v["column_name"], v["rule"], v["rows"]) for v in report.violations),
    )


def _stored(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    out = {t: con.sql(f"SELECT * FROM raw.{t} ORDER BY ALL").pl() for t in RAW_TABLES}
    out["quarantine"] = con.sql(
        "SELECT * EXCLUDE (rejected_at) FROM quarantine.rejected_rows ORDER BY ALL"
    ).pl()
    return out


def test_sharded_ingestion_stores_the_local_rows_and_quarantine(
    landing: Path, tmp_path: Path, dask_client_2w
):
    weeks = [p.stem for p in _week_files(landing, "usage")][:21]  # the broken files are among them
    with Warehouse(tmp_path / "local.duckdb").connect() as con:
        local = _ingest(
            con, lambda t: ingest_partitions(con, landing, t, weeks, chunk_weeks=5, max_reject_share=0.5)
        )
        expected = _stored(con)
    with Warehouse(tmp_path / "dask.duckdb").connect() as con:
        sharded = _ingest(
            con,
            lambda t: ingest_partitions_on_cluster(
                con,
                dask_client_2w,
                landing,
                t,
                weeks,
                home=tmp_path,
                shards=SHARDS,
                chunk_weeks=5,
                max_reject_share=0.5,
            ),
        )
        got = _stored(con)
    assert not list(cluster_root(tmp_path).iterdir())  # the stored keys' exchange folders are removed
    for name, frame in expected.items():
        assert got[name].equals(frame), name
    for table in RAW_TABLES:
        assert _summary(sharded[table]) == _summary(local[table]), table
        assert (
            sum(sharded[table].shard_rows) == local[table].rows_in
            and len(sharded[table].shard_rows) == SHARDS
        )
    rules = set(expected["quarantine"].select("table_name", "rule").unique().iter_rows())
    # every kind of breakage was exercised
    assert {
        ("billing", "field_uniqueness"),
        ("billing", "not_nullable"),
        ("support_tickets", "key_not_already_stored"),  # an earlier batch's ticket id
        ("engagement", "file_has_rows"),
        ("accounts", "column_present"),
    } <= rules
    assert any(rule.startswith("file_readable") for table, rule in rules if table == "usage")


def test_rows_go_to_the_shard_of_their_key(landing: Path):
    billing = pl.read_parquet(_week_files(landing, "billing")[20])
    shards = row_shards(billing, "billing", SHARDS)
    ids = billing["invoice_id"].to_numpy()
    assert shards.tolist() == shard_of(ids, SHARDS).tolist()  # billing by invoice, not by customer
    usage = pl.read_parquet(_week_files(landing, "usage")[3]).with_columns(customer_id=pl.lit(None, pl.Int64))
    assert set(row_shards(usage, "usage", SHARDS).tolist()) == {0}  # no key: shard 0
