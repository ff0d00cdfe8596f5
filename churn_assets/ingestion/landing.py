"""The landing zone: where upstream systems (here, the simulator) drop raw files.

Layout: ``{landing_dir}/{table}/{week_key}.parquet`` — one file per raw table per landing week.
CSV files (``.csv``) are accepted too, read as text so that the contracts judge every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class LandingFile:
    table: str
    week_key: str | None
    path: Path


def landing_path(landing_dir: Path, table: str, week_key: str) -> Path:
    return landing_dir / table / f"{week_key}.parquet"


def find_file(landing_dir: Path, table: str, week_key: str) -> Path | None:
    for suffix in SUFFIXES:
        path = landing_dir / table / f"{week_key}{suffix}"
        if path.exists():
            return path
    return None


def read_file(path: Path) -> pl.DataFrame:
    """Read one landing file; CSV columns stay text so that type errors reach the contract."""
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema=False, null_values=[""])
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .parquet or .csv")


def discover(folder: Path, tables: tuple[str, ...]) -> list[LandingFile]:
    """Raw files in ``folder``: ``{table}/{week}.parquet|csv`` or ``{table}.parquet|csv``."""
    found: list[LandingFile] = []
    for table in tables:
        for suffix in SUFFIXES:
            single = folder / f"{table}{suffix}"
            if single.exists():
                found.append(LandingFile(table, None, single))
        sub = folder / table
        if sub.is_dir():
            for path in sorted(sub.iterdir()):
                if path.suffix in SUFFIXES:
                    found.append(LandingFile(table, path.stem, path))
    return found


def landed_weeks(landing_dir: Path, table: str) -> list[str]:
    sub = landing_dir / table
    if not sub.is_dir():
        return []
    return sorted({p.stem for p in sub.iterdir() if p.suffix in SUFFIXES})
