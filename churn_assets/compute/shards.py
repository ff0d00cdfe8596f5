"""The Parquet files through which the run process and the Dask workers exchange customer shards.

The DuckDB warehouse (``settings.warehouse_path``) stays the system of record with either engine: one
writing process, the run's. A sharded stage therefore

1. exports what its tasks read from the warehouse, one Parquet file set per customer shard
   (:func:`export_shards`: one ``COPY ... PARTITION_BY`` per table, streamed by DuckDB — never through
   Python), into a stage folder under ``<home>/cluster/`` that every worker reaches at the same path;
2. runs one task per shard on the workers: each loads its shard into an in-memory DuckDB
   (:func:`load_shard`), runs the same transformation code as the local engine and writes its result
   next to it;
3. imports the results into the warehouse in one transaction once every task has succeeded, and
   removes the stage folder (:func:`stage_folder`). A failed stage leaves the warehouse as it was.

Layout of a stage folder (``<home>/cluster/<stage>-<32 hex>/``)::

    in/<schema>.<table>/shard=<k>/*.parquet     rows of the customers of shard k (no file: none)
    out/...                                      what the stage's tasks write (named by the stage)

The shard of a row is :func:`~churn_assets.storage.customer_shards.shard_of` of its ``customer_id``, computed in
SQL by :func:`~churn_assets.storage.customer_shards.shard_sql` (the same values).
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from churn_assets.storage.customer_shards import shard_sql

SHARD = "shard"


def cluster_root(home: Path) -> Path:
    """Where sharded stages keep their exchange folders: ``<home>/cluster``."""
    return home / "cluster"


@contextlib.contextmanager
def stage_folder(home: Path, stage: str) -> Iterator[Path]:
    """A fresh exchange folder ``<home>/cluster/<stage>-<hex>`` for one run of a stage, removed after it
    (also when the stage fails: it only ever holds copies and intermediate results)."""
    root = cluster_root(home) / f"{stage}-{uuid.uuid4().hex}"
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shard_input(stage: Path, table: str) -> Path:
    """The folder of ``table``'s exported shards in a stage folder."""
    return stage / "in" / table


def export_shards(
    con: duckdb.DuckDBPyConnection, table: str, stage: Path, shards: int, where: str = ""
) -> Path:
    """Write ``table`` (``schema.table``) of ``con`` — the rows matching the SQL condition ``where``, if
    given — as one Parquet file set per customer shard; returns the folder (:func:`shard_input`). Shards
    without rows get no file."""
    out = shard_input(stage, table)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = str(out).replace("'", "''")
    condition = f" WHERE {where}" if where else ""
    con.execute(
        f"COPY (SELECT *, {shard_sql(shards)} AS {SHARD} FROM {table}{condition}) "
        f"TO '{target}' (FORMAT parquet, PARTITION_BY ({SHARD}), OVERWRITE_OR_IGNORE)"
    )
    return out


def shard_files(folder: Path, shard: int) -> list[Path]:
    """The Parquet files of ``shard`` under an exported folder (empty when the shard has no rows)."""
    return sorted((folder / f"{SHARD}={shard}").glob("*.parquet"))


def load_shard(
    con: duckdb.DuckDBPyConnection, table: str, folder: Path, shard: int, order_by: str = ""
) -> int:
    """Insert the exported rows of ``shard`` into the existing ``table`` of ``con`` (by column name);
    returns the rows loaded."""
    files = [str(f) for f in shard_files(folder, shard)]
    if not files:
        return 0
    order = f" ORDER BY {order_by}" if order_by else ""
    [(before,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet($files, hive_partitioning = false){order}",
        {"files": files},
    )
    [(after,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(after) - int(before)


__all__ = [
    "SHARD",
    "cluster_root",
    "export_shards",
    "load_shard",
    "shard_files",
    "shard_input",
    "shard_sql",
    "stage_folder",
]
