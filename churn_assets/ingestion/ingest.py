"""Landing files -> contract -> raw tables (accepted rows) + quarantine (rejected rows).

Each landing file is read and validated in chunks (:func:`~churn_assets.ingestion.contract_files.validate_file`).
A file whose rows can be judged one by one has its good rows stored and its bad rows quarantined.
A file that cannot be used at all — unreadable (rule ``file_readable(<reason>)``), breaking the
contract's columns (``column_present``, ``no_unexpected_columns``) or header-only for a table that
always has rows (``file_has_rows``) — leaves its week's stored partition as it was, is recorded in
the quarantine (every row, or one entry with the pseudo-column ``<file>`` when there are no rows),
and the other weeks are still ingested; :class:`BatchRejected` then names every such file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from churn_assets.ingestion.contract_files import ContractOptions, FileReport, RowSelector, validate_file
from churn_assets.ingestion.landing import find_file
from churn_assets.storage.warehouse import record_rejections, replace_partitions, stored_keys
from data_contracts.validation import REJECTION_SCHEMA, StreamValidator, ValidationResult

log = logging.getLogger(__name__)

QUARANTINE_SCHEMA = {**REJECTION_SCHEMA, "week_start": pl.Date, "source_file": pl.String}


class MissingLandingFile(FileNotFoundError):
    """A requested partition has no landing file."""


class BatchRejected(ValueError):
    """Landing files that cannot be used at all; their stored partitions were left as they were."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


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
    broken_files: list[str] = field(default_factory=list)  # files that could not be used at all
    shard_rows: list[int] = field(default_factory=list)  # rows read per customer shard (Dask engine)
    warnings: list[str] = field(default_factory=list)

    @property
    def quarantine_share(self) -> float:
        return self.rows_rejected / self.rows_in if self.rows_in else 0.0

    def absorb(self, file: FileReport, rejected: pl.DataFrame, sample_size: int = 5) -> None:
        self.rows_in += file.rows or 0
        self.rows_rejected += file.rejected
        self.warnings.extend(file.warnings)
        for row in file.violations:
            self._add_violation(
                {k: row[k] for k in ("column_name", "rule", "rows", "example")}  # no samples: see below
            )
        room = sample_size - len(self.sample_rejections)
        if room > 0 and rejected.height:
            sample = rejected.head(room).select("column_name", "rule", "failure_case", "row_json")
            self.sample_rejections.extend(sample.to_dicts())

    def _add_violation(self, row: dict[str, object]) -> None:
        for existing in self.violations:
            if (existing["column_name"], existing["rule"]) == (row["column_name"], row["rule"]):
                existing["rows"] = int(existing["rows"]) + int(row["rows"])  # type: ignore[call-overload]
                return
        self.violations.append(dict(row))


class _FileRows:
    """Collects the accepted rows and the quarantine rows of one file, chunk by chunk."""

    def __init__(self, path: Path, week: str) -> None:
        self.path, self.week = path, week
        self.accepted: list[pl.DataFrame] = []
        self.rejected: list[pl.DataFrame] = []

    def add(self, result: ValidationResult, file_start: int) -> None:
        if result.accepted.height:
            self.accepted.append(result.accepted)
        if result.rejected.height:
            self.rejected.append(
                result.rejected.with_columns(
                    pl.col("row_index") - file_start,
                    week_start=pl.lit(self.week).str.to_date(),
                    source_file=pl.lit(str(self.path)),
                )
            )

    def quarantine(self, table: str, report: FileReport) -> list[pl.DataFrame]:
        """Rows to quarantine: the rejected rows, or, when no row carries the violations (an
        unreadable or header-only file), one entry per violation with a null row index."""
        if self.rejected and report.readable:
            return [part.select(list(QUARANTINE_SCHEMA)) for part in self.rejected]
        entries = report.violations
        frame = pl.DataFrame(
            {
                "table_name": [table] * len(entries),
                "row_index": [None] * len(entries),
                "column_name": [v["column_name"] for v in entries],
                "rule": [v["rule"] for v in entries],
                "failure_case": [str(v["example"]) for v in entries],
                "row_json": [None] * len(entries),
                "week_start": [self.week] * len(entries),
                "source_file": [str(self.path)] * len(entries),
            },
            schema={**QUARANTINE_SCHEMA, "week_start": pl.String},
        ).with_columns(pl.col("week_start").str.to_date())
        return [frame]


def _empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


@dataclass
class WeekFile:
    """One week's landing file after validation: its verdict, accepted rows and quarantine rows."""

    week: str
    path: Path
    outcome: FileReport
    accepted: list[pl.DataFrame]
    quarantine: list[pl.DataFrame]


def validate_weeks(
    landing_dir: Path,
    table: str,
    weeks: Sequence[str],
    stored: pl.DataFrame | None,
    options: ContractOptions,
    select: RowSelector | None = None,
) -> list[WeekFile]:
    """Validate the landing files of ``weeks`` as one batch (keys unique across them and against
    ``stored``); ``select``: only the rows of one customer shard (see :func:`validate_file`)."""
    validator = StreamValidator(table, stored_keys=stored, date_bounds=options.date_bounds)
    out: list[WeekFile] = []
    for week in weeks:
        path = find_file(landing_dir, table, week)
        if path is None:
            raise MissingLandingFile(
                f"raw table {table!r}: no landing file for week {week} under {landing_dir / table} "
                "(run `churnops simulate` or drop the file there)"
            )
        rows = _FileRows(path, week)
        outcome = validate_file(path, table, week, validator, options, on_chunk=rows.add, select=select)
        out.append(WeekFile(week, path, outcome, rows.accepted, rows.quarantine(table, outcome)))
    return out


def merge_shard_files(table: str, parts: Sequence[WeekFile], sample_rows: int) -> WeekFile:
    """One week's file as validated whole, from its customer shards' :func:`validate_weeks` results (the
    shards partition the rows): counts add up, rules merge (their first examples by row number), and
    the quarantine holds every shard's rejected rows, or the file-level entries once."""
    first = parts[0]
    out = FileReport(file=first.outcome.file, table=table)
    if all(p.outcome.readable for p in parts):
        out.rows = sum(p.outcome.rows or 0 for p in parts)
        out.rejected = sum(p.outcome.rejected for p in parts)
    else:
        out.rows = None
    out.structural = any(p.outcome.structural for p in parts)
    by_rule: dict[tuple[object, object], dict[str, object]] = {}
    for part in parts:
        for v in part.outcome.violations:
            key = (v["column_name"], v["rule"])
            if key not in by_rule:
                by_rule[key] = {**v, "samples": list(v["samples"])}  # type: ignore[call-overload]
            elif v["rows"]:
                entry = by_rule[key]
                entry["rows"] = int(entry["rows"]) + int(v["rows"])  # type: ignore[call-overload]
                entry["samples"].extend(v["samples"])  # type: ignore[attr-defined]
    for entry in by_rule.values():
        found: list[dict[str, Any]] = list(entry["samples"])  # type: ignore[call-overload]
        samples = sorted(found, key=lambda r: int(r["row"]))[:sample_rows]
        entry["samples"] = samples
        if samples:
            entry["example"] = samples[0]["failure_case"]
    counted = sorted(
        (v for v in by_rule.values() if v["rows"]),
        key=lambda v: (-int(v["rows"]), str(v["column_name"]), str(v["rule"])),  # type: ignore[call-overload]
    )
    out.violations = counted + [v for v in by_rule.values() if not v["rows"]]
    out.warnings = list(dict.fromkeys(w for p in parts for w in p.outcome.warnings))
    row_level = [
        q for p in parts for q in p.quarantine if q.height and q["row_index"].null_count() < q.height
    ]
    if out.readable and row_level:
        quarantine = row_level
    else:
        quarantine = _FileRows(first.path, first.week).quarantine(table, out)
    return WeekFile(first.week, first.path, out, [a for p in parts for a in p.accepted], quarantine)


def store_weeks(
    con: duckdb.DuckDBPyConnection,
    table: str,
    files: Sequence[WeekFile],
    report: IngestReport,
    max_reject_share: float | None,
    options: ContractOptions,
) -> None:
    """Store one validated batch: unusable files keep their week's partition (quarantine recorded); the
    usable ones replace theirs in one transaction, unless they reject more than ``max_reject_share``."""
    good_weeks: list[str] = []
    accepted: list[pl.DataFrame] = []
    rejected: list[pl.DataFrame] = []
    bad_weeks: list[str] = []
    bad_rejected: list[pl.DataFrame] = []
    rows_in = rows_rejected = 0
    for file in files:
        outcome = file.outcome
        report.absorb(
            outcome, file.quarantine[0] if file.quarantine else _empty_quarantine(), options.sample_rows
        )
        if outcome.usable:
            good_weeks.append(file.week)
            accepted.extend(file.accepted)
            rejected.extend(file.quarantine)
            rows_in += outcome.rows or 0
            rows_rejected += outcome.rejected
        else:
            bad_weeks.append(file.week)
            bad_rejected.extend(file.quarantine)
            report.broken_files.append(f"{file.path}: " + "; ".join(outcome.describe()))
    if bad_weeks:
        record_rejections(con, table, bad_weeks, bad_rejected)
    if good_weeks:
        share = rows_rejected / rows_in if rows_in else 0.0
        if max_reject_share is not None and share > max_reject_share:
            record_rejections(con, table, good_weeks, rejected)
            report.kept_previous.extend(good_weeks)
        else:
            replace_partitions(con, table, good_weeks, accepted, rejected)
            report.rows_accepted += sum(part.height for part in accepted)


def raise_broken(table: str, report: IngestReport) -> None:
    if report.broken_files:
        raise BatchRejected(
            f"raw table {table!r}: {len(report.broken_files)} landing file(s) cannot be used, their stored "
            "partitions were left untouched and the rejection is in quarantine.rejected_rows: "
            + " | ".join(report.broken_files),
            report,
        )


def ingest_partitions(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    table: str,
    weeks: Sequence[str],
    *,
    chunk_weeks: int = 13,
    max_reject_share: float | None = None,
    options: ContractOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Validate the landing files of ``weeks`` and replace those partitions of ``raw.{table}``.

    Works in chunks of ``chunk_weeks`` partitions (each file itself read in chunks of
    ``options.chunk_rows`` rows); each chunk is one transaction. When a chunk's usable files
    reject more than ``max_reject_share`` of their rows, its stored partitions are kept as they
    were (only the quarantine is updated): the contract check then fails and blocks the features,
    and the last good data stays in place. Files that cannot be used at all keep their week's
    stored partition too; after every week was processed, :class:`BatchRejected` names them.
    """
    options = options or ContractOptions()
    report = IngestReport(table=table, weeks=list(weeks))
    ordered = sorted(weeks)
    for start in range(0, len(ordered), chunk_weeks):
        chunk = ordered[start : start + chunk_weeks]
        stored = stored_keys(con, table, excluding_weeks=chunk)
        store_weeks(
            con,
            table,
            validate_weeks(landing_dir, table, chunk, stored, options),
            report,
            max_reject_share,
            options,
        )
        if progress is not None:
            progress(min(start + chunk_weeks, len(ordered)), len(ordered))
    log.info(
        "raw.%s: %d week(s) ingested, %d rows accepted, %d week(s) kept as stored, %d unusable file(s)",
        table,
        len(ordered),
        report.rows_accepted,
        len(report.kept_previous),
        len(report.broken_files),
    )
    raise_broken(table, report)
    return report
