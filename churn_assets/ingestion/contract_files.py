"""Validate a folder of raw files against the contracts (``churnops contracts check DIR``, CI)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from churn_assets.ingestion.landing import discover, read_file
from data_contracts.raw_tables import RAW_TABLES
from data_contracts.validation import validate_batch


@dataclass
class FileReport:
    file: str
    table: str
    rows: int
    rejected: int
    violations: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "table": self.table,
            "rows": self.rows,
            "rejected": self.rejected,
            "violations": self.violations,
        }


def check_file(path: Path, table: str, week_key: str | None = None) -> FileReport:
    frame = read_file(path)
    weeks = None
    if week_key is not None:
        try:
            weeks = pl.repeat(dt.date.fromisoformat(week_key), frame.height, eager=True)
        except ValueError:
            weeks = None  # a file not named after its week: no landing-week rule
    result = validate_batch(table, frame, landing_weeks=weeks)
    return FileReport(
        file=str(path),
        table=table,
        rows=frame.height,
        rejected=result.rejected_rows,
        violations=result.violations().to_dicts(),
    )


def check_folder(folder: Path) -> list[FileReport]:
    """One report per raw file found in ``folder`` (see ``landing.discover`` for the layout)."""
    return [check_file(f.path, f.table, f.week_key) for f in discover(folder, RAW_TABLES)]
