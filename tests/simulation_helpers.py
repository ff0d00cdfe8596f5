"""Helpers shared by the simulation tests: small worlds, landing-file reading, DuckDB loading."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

from churn_assets.feature_store.transforms import load_landing_into_duckdb
from churn_assets.settings import SimulationSettings
from data_contracts.raw_tables import RAW_TABLES


def small_settings(n_customers: int = 5_000, **overrides: object) -> SimulationSettings:
    """Simulation settings of a small world (default scenario)."""
    return SimulationSettings(n_customers=n_customers, **overrides)  # type: ignore[arg-type]


def landing_files(landing_dir: Path) -> dict[tuple[str, str], Path]:
    """(table, week key) -> Parquet file of a landing folder."""
    return {(t, p.stem): p for t in RAW_TABLES for p in sorted((landing_dir / t).glob("*.parquet"))}


def read_partition(landing_dir: Path, table: str, key: str) -> pl.DataFrame:
    return pl.read_parquet(landing_dir / table / f"{key}.parquet")


def assert_same_landing(a: Path, b: Path, keys: list[str] | None = None) -> None:
    """The two landing folders hold identical frames (for ``keys``, or every file)."""
    files_a, files_b = landing_files(a), landing_files(b)
    if keys is not None:
        files_a = {k: v for k, v in files_a.items() if k[1] in keys}
        files_b = {k: v for k, v in files_b.items() if k[1] in keys}
    assert files_a.keys() == files_b.keys()
    for key, path in files_a.items():
        left, right = pl.read_parquet(path), pl.read_parquet(files_b[key])
        assert left.equals(right), f"{key} differs"


def duckdb_with_landing(landing_dir: Path, landed_by: dt.date | None = None) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with ``raw.*`` from the landing files; optionally only partitions landed by a date."""
    con = duckdb.connect()
    load_landing_into_duckdb(con, landing_dir)
    if landed_by is not None:
        for table in RAW_TABLES:
            con.execute(f"DELETE FROM raw.{table} WHERE week_start + 7 > ?", [landed_by])
    return con
