"""Landing files -> contract -> raw tables (accepted rows) + quarantine (rejected rows)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from churn_assets.ingestion.landing import find_file, read_file
from churn_assets.storage.warehouse import record_rejections, replace_partitions, stored_keys
from data_contracts.validation import ValidationResult, validate_batch


class MissingLandingFile(FileNotFoundError):
    """A requested partition has no landing file."""


class BatchRejected(ValueError):
    """A landing file's structure breaks the contract; the stored partition was left as it was."""


@dataclass
class IngestReport:
    """What one ingestion of a raw table did; becomes Dagster metadata and CLI output."""

    table: str
    weeks: list[str]
    rows_in: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    violations: list[dict[str, object]] = field(default_factory=list)
    sample_rejections: list[dict[str, object]] = field(default_factory=list)
    kept_previous: list[str] = field(default_factory=list)  # weeks too broken to replace

    @property
    def quarantine_share(self) -> float:
        return self.rows_rejected / self.rows_in if self.rows_in else 0.0

    def absorb(self, result: ValidationResult, sample_size: int = 5) -> None:
        self.rows_in += result.rows_in
        self.rows_accepted += result.accepted.height
        self.rows_rejected += result.rejected_rows
        for row in result.violations().iter_rows(named=True):
            self._add_violation(row)
        room = sample_size - len(self.sample_rejections)
        if room > 0 and result.rejected.height:
            sample = result.rejected.head(room).select("column_name", "rule", "failure_case", "row_json")
            self.sample_rejections.extend(sample.to_dicts())

    def _add_violation(self, row: dict[str, object]) -> None:
        for existing in self.violations:
            if (existing["column_name"], existing["rule"]) == (row["column_name"], row["rule"]):
                existing["rows"] = int(existing["rows"]) + int(row["rows"])  # type: ignore[call-overload]
                return
        self.violations.append(dict(row))


@dataclass(frozen=True)
class _Batch:
    """Rows of several landing files, with where each row came from."""

    frame: pl.DataFrame
    landing_weeks: pl.Series  # week of the file each row came from
    sources: pl.Series  # file path of each row
    row_in_file: pl.Series  # 0-based row number inside its file


def _read_weeks(landing_dir: Path, table: str, weeks: Sequence[str]) -> _Batch:
    frames: list[pl.DataFrame] = []
    landing_weeks: list[pl.Series] = []
    sources: list[str] = []
    rows: list[int] = []
    for week in weeks:
        path = find_file(landing_dir, table, week)
        if path is None:
            raise MissingLandingFile(
                f"raw table {table!r}: no landing file for week {week} under {landing_dir / table} "
                "(run `churnops simulate` or drop the file there)"
            )
        frame = read_file(path)
        frames.append(frame)
        landing_weeks.append(pl.repeat(dt.date.fromisoformat(week), frame.height, eager=True))
        sources.extend([str(path)] * frame.height)
        rows.extend(range(frame.height))
    return _Batch(
        frame=pl.concat(frames, how="diagonal_relaxed"),
        landing_weeks=pl.concat(landing_weeks),
        sources=pl.Series(sources, dtype=pl.String),
        row_in_file=pl.Series(rows, dtype=pl.Int64),
    )


def ingest_partitions(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    table: str,
    weeks: Sequence[str],
    *,
    chunk_weeks: int = 13,
    max_reject_share: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Validate the landing files of ``weeks`` and replace those partitions of ``raw.{table}``.

    Works in chunks of ``chunk_weeks`` partitions to bound memory; each chunk is one transaction.
    When a chunk rejects more than ``max_reject_share`` of its rows, its stored partitions are
    kept as they were (only the quarantine is updated): the contract check then fails and blocks
    the features, and the last good data stays in place.
    """
    report = IngestReport(table=table, weeks=list(weeks))
    ordered = sorted(weeks)
    for start in range(0, len(ordered), chunk_weeks):
        chunk = ordered[start : start + chunk_weeks]
        batch = _read_weeks(landing_dir, table, chunk)
        keys = stored_keys(con, table, excluding_weeks=chunk)
        result = validate_batch(table, batch.frame, stored_keys=keys, landing_weeks=batch.landing_weeks)
        where = result.rejected["row_index"]
        rejected = result.rejected.with_columns(
            week_start=batch.landing_weeks.gather(where),
            source_file=batch.sources.gather(where),
            row_index=batch.row_in_file.gather(where),
        )
        report.absorb(result)
        if result.structural:
            # Nothing usable: keep the stored partitions, record why in the quarantine, stop.
            record_rejections(con, table, chunk, rejected)
            raise BatchRejected(
                f"raw table {table!r}, weeks {chunk[0]}..{chunk[-1]}: the landing files break the "
                f"contract's structure, stored data left untouched: " + "; ".join(result.describe())
            )
        share = result.rejected_rows / result.rows_in if result.rows_in else 0.0
        if max_reject_share is not None and share > max_reject_share:
            record_rejections(con, table, chunk, rejected)
            report.kept_previous.extend(chunk)
        else:
            replace_partitions(con, table, chunk, result.accepted, rejected)
        if progress is not None:
            progress(min(start + chunk_weeks, len(ordered)), len(ordered))
    return report
