"""The embedded DuckDB warehouse: raw tables, the quarantine, and partition bookkeeping.

Schemas: ``raw`` (one table per raw source, columns of its contract), ``quarantine``
(``rejected_rows``: every row a contract refused, with the rule) and ``features`` (the offline
feature store, see :mod:`churn_assets.feature_store.offline`).

DuckDB allows one writing process at a time; the Dagster code location therefore runs its steps
in process (see ``defs/definitions``), and every writer here works in a transaction so that a
failed write leaves the stored data as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from data_contracts.raw_tables import RAW_CONTRACTS, polars_schema

if TYPE_CHECKING:
    from churn_assets.settings import Settings

_DUCKDB_TYPES: dict[type[pl.DataType], str] = {
    pl.Int64: "BIGINT",
    pl.Int32: "INTEGER",
    pl.Float64: "DOUBLE",
    pl.String: "VARCHAR",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Datetime: "TIMESTAMP",
}

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine.rejected_rows (
    table_name VARCHAR NOT NULL,
    week_start DATE,
    row_index BIGINT,
    column_name VARCHAR,
    rule VARCHAR NOT NULL,
    failure_case VARCHAR,
    row_json VARCHAR,
    rejected_at TIMESTAMP NOT NULL,
    source_file VARCHAR
)
"""


def query_pl(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> pl.DataFrame:
    """Run ``sql`` and return a polars frame (through Arrow, no pandas)."""
    return con.sql(sql, params=params or None).pl()


def duckdb_type(dtype: pl.DataType) -> str:
    return _DUCKDB_TYPES[dtype.base_type()]


def raw_table_ddl(table: str) -> str:
    cols = ", ".join(f'"{name}" {duckdb_type(dtype)}' for name, dtype in polars_schema(table).items())
    return f"CREATE TABLE IF NOT EXISTS raw.{table} ({cols})"


class Warehouse:
    """Handle on the DuckDB file; opens short-lived connections so other processes can read."""

    def __init__(self, path: Path | str, *, threads: int | None = None, memory_limit: str | None = None):
        self.path = Path(path)
        self.threads = threads
        self.memory_limit = memory_limit

    @classmethod
    def of(cls, settings: Settings) -> Warehouse:
        """The warehouse of ``settings``: its file (``warehouse_path``) with its DuckDB buffer limit
        (``duckdb_memory_limit``; DuckDB's own default is 80 % of the machine's memory)."""
        return cls(settings.warehouse_path, memory_limit=settings.duckdb_memory_limit)

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise FileNotFoundError(
                f"no warehouse at {self.path}: run `churnops demo` (or materialize the raw assets) first"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if self.threads:
            config["threads"] = self.threads
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        con = duckdb.connect(str(self.path), read_only=read_only, config=config)
        try:
            if not read_only:
                self.ensure_schemas(con)
            yield con
        finally:
            con.close()

    @staticmethod
    def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
        for schema in ("raw", "quarantine", "features"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in RAW_CONTRACTS:
            con.execute(raw_table_ddl(table))
        con.execute(QUARANTINE_DDL)


def stored_keys(
    con: duckdb.DuckDBPyConnection, table: str, excluding_weeks: Sequence[str]
) -> pl.DataFrame | None:
    """Key columns of rows stored outside ``excluding_weeks``; None when the key has week_start."""
    _, keys = RAW_CONTRACTS[table]
    if "week_start" in keys:
        return None  # partition-local key: uniqueness within the batch is enough
    cols = ", ".join(keys)
    return query_pl(
        con,
        f"SELECT {cols} FROM raw.{table} WHERE week_start NOT IN (SELECT unnest($1::DATE[]))",
        [list(excluding_weeks)],
    )


def replace_partitions(
    con: duckdb.DuckDBPyConnection,
    table: str,
    weeks: Sequence[str],
    accepted: pl.DataFrame | Sequence[pl.DataFrame] | None,
    rejected: pl.DataFrame | Sequence[pl.DataFrame],
) -> None:
    """Atomically replace the rows (and the quarantine entries) of ``weeks`` in ``table``.

    ``accepted=None`` leaves the raw rows alone and replaces only the quarantine entries. Either
    may be a list of frames (the chunks of a validation), inserted one by one: no concatenated copy.
    """
    accepted_parts = [accepted] if isinstance(accepted, pl.DataFrame) else accepted
    rejected_parts = [rejected] if isinstance(rejected, pl.DataFrame) else rejected
    cols = list(polars_schema(table))
    col_sql = ", ".join(f'"{c}"' for c in cols)
    con.execute("BEGIN TRANSACTION")
    try:
        if accepted_parts is not None:
            con.execute(
                f"DELETE FROM raw.{table} WHERE week_start IN (SELECT unnest($1::DATE[]))", [list(weeks)]
            )
        con.execute(
            "DELETE FROM quarantine.rejected_rows WHERE table_name = $1 "
            "AND week_start IN (SELECT unnest($2::DATE[]))",
            [table, list(weeks)],
        )
        for part in accepted_parts or []:
            if part.height:
                batch = part.select(cols).to_arrow()  # noqa: F841 - read by DuckDB's replacement scan
                con.execute(f"INSERT INTO raw.{table} ({col_sql}) SELECT {col_sql} FROM batch")
        for part in rejected_parts:
            if part.height:
                quarantine = part.to_arrow()  # noqa: F841
                con.execute(
                    "INSERT INTO quarantine.rejected_rows BY NAME SELECT *, now()::TIMESTAMP AS rejected_at "
                    "FROM quarantine"
                )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def record_rejections(
    con: duckdb.DuckDBPyConnection,
    table: str,
    weeks: Sequence[str],
    rejected: pl.DataFrame | Sequence[pl.DataFrame],
) -> None:
    """Replace the quarantine entries of ``weeks`` without touching the raw table."""
    replace_partitions(con, table, weeks, None, rejected)


def quarantine_rows(
    con: duckdb.DuckDBPyConnection, table: str, weeks: Sequence[str] | None = None, limit: int | None = None
) -> pl.DataFrame:
    where = "table_name = $1"
    params: list[object] = [table]
    if weeks is not None:
        where += " AND week_start IN (SELECT unnest($2::DATE[]))"
        params.append(list(weeks))
    sql = f"SELECT * FROM quarantine.rejected_rows WHERE {where} ORDER BY week_start, row_index"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return query_pl(con, sql, params)
