"""Validate raw files against the contracts, one bounded chunk at a time.

:func:`validate_file` is the one way a landing file is judged, by ``churnops contracts check DIR``
(:func:`check_folder`) and by ingestion alike: the file is read in chunks of
``ContractOptions.chunk_rows`` rows, each chunk is validated by a
:class:`~data_contracts.validation.StreamValidator` (keys stay unique across chunks), and the
outcome is summarised per (column, rule) with at most ``sample_rows`` example rows each, so the
memory needed does not grow with the file. File-level problems are violations too, with the
pseudo-column ``<file>``:

* ``file_readable(<reason>)``: the file cannot be read as a table; reasons ``empty`` (0 bytes),
  ``encoding`` (a CSV that is not UTF-8, with the offset and line of the first bad byte),
  ``malformed_csv`` (unterminated quote, too many fields...), ``not_parquet`` (no Parquet magic
  bytes: not Parquet, or truncated), ``corrupt_parquet`` (damaged pages), ``not_a_file``
  (a folder named like a file), ``os_error`` (e.g. no permission);
* ``file_has_rows``: a header-only file of a table in ``tables_never_empty`` (for the other
  tables a header-only file is a warning, not a violation).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from churn_assets.ingestion.landing import UnreadableFile, discover, read_chunks
from churn_assets.settings import Settings
from data_contracts.raw_tables import RAW_TABLES, polars_schema
from data_contracts.validation import DateBounds, StreamValidator, ValidationResult

FILE_COLUMN = "<file>"
NEVER_EMPTY_DEFAULT = ("usage", "engagement", "billing")


@dataclass(frozen=True)
class ContractOptions:
    """How files are validated (from ``Settings.contracts``, see :meth:`from_settings`)."""

    chunk_rows: int = 100_000
    sample_rows: int = 5
    date_bounds: DateBounds = field(default_factory=DateBounds)
    tables_never_empty: tuple[str, ...] = NEVER_EMPTY_DEFAULT

    @classmethod
    def from_settings(cls, settings: Settings) -> ContractOptions:
        earliest, latest = settings.contract_date_bounds
        c = settings.contracts
        return cls(
            chunk_rows=c.chunk_rows,
            sample_rows=c.sample_rows_per_rule,
            date_bounds=DateBounds(earliest, latest),
            tables_never_empty=tuple(c.tables_never_empty),
        )


@dataclass
class FileReport:
    """The verdict on one file: counts, violations per (column, rule) with samples, warnings."""

    file: str
    table: str
    rows: int | None = 0  # None: the file could not be read
    rejected: int = 0
    violations: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    structural: bool = False  # the file's columns break the contract: no row can be kept

    @property
    def readable(self) -> bool:
        return self.rows is not None

    @property
    def usable(self) -> bool:
        """Rows of this file may be stored (its failures, if any, are per row)."""
        return self.readable and not self.structural and not self._has_rule("file_has_rows")

    def _has_rule(self, rule: str) -> bool:
        return any(v["rule"] == rule for v in self.violations)

    def describe(self) -> list[str]:
        """One line per violation naming table, column and rule (and the reason of a file-level one)."""
        return [
            f"{self.table}.{v['column_name']}: rule {v['rule']} broken by {v['rows']} row(s) "
            f"(e.g. {_short(v['example'])})"
            if v["rows"]
            else f"{self.table}.{v['column_name']}: rule {v['rule']} ({_short(v['example'], 160)})"
            for v in self.violations
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "table": self.table,
            "readable": self.readable,
            "rows": self.rows,
            "rejected": self.rejected,
            "violations": self.violations,
            "warnings": self.warnings,
        }

    def _file_violation(self, rule: str, detail: str) -> None:
        self.violations.append(
            {"column_name": FILE_COLUMN, "rule": rule, "rows": 0, "example": detail, "samples": []}
        )


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _samples(
    result: ValidationResult, chunk: pl.DataFrame, numbers: pl.Series, room: dict[tuple[str, str], int]
) -> dict[tuple[str, str], list[dict[str, object]]]:
    """Up to ``room[(column, rule)]`` example rows per rule from one chunk whose rows have the stream
    row ``numbers``."""
    out: dict[tuple[str, str], list[dict[str, object]]] = {}
    keys = pl.DataFrame(
        {"column_name": [k[0] for k in room], "rule": [k[1] for k in room]},
        schema={"column_name": pl.String, "rule": pl.String},
    )
    wanted = result.rejected.join(keys, on=["column_name", "rule"], how="semi")
    for (column, rule), group in wanted.group_by("column_name", "rule", maintain_order=True):
        n = room.get((str(column), str(rule)), 0)
        rows = group.unique("row_index", keep="first").sort("row_index").head(n)  # the first rows
        position = pl.DataFrame(
            {"row_index": numbers.cast(pl.Int64), "_pos": pl.int_range(len(numbers), eager=True)}
        )
        positions = rows.select("row_index").join(position, on="row_index", how="left", maintain_order="left")
        originals = chunk[positions["_pos"].to_list()].to_dicts()
        out[(str(column), str(rule))] = [
            {
                "row": int(r["row_index"]),
                "failure_case": r["failure_case"],
                "row_json": orjson.dumps(original, default=str).decode(),
            }
            for r, original in zip(rows.iter_rows(named=True), originals, strict=True)
        ]
    return out


class _Summary:
    """Running per-(column, rule) counts of a file, with bounded samples."""

    def __init__(self, sample_rows: int) -> None:
        self.sample_rows = sample_rows
        self.by_rule: dict[tuple[str, str], dict[str, object]] = {}

    def add(self, result: ValidationResult, chunk: pl.DataFrame, numbers: pl.Series) -> None:
        for row in result.violations().iter_rows(named=True):
            key = (row["column_name"], row["rule"])
            entry = self.by_rule.setdefault(
                key,
                {"column_name": key[0], "rule": key[1], "rows": 0, "example": row["example"], "samples": []},
            )
            entry["rows"] = int(entry["rows"]) + int(row["rows"])  # type: ignore[call-overload]
        room = {
            k: self.sample_rows - len(v["samples"])  # type: ignore[arg-type]
            for k, v in self.by_rule.items()
            if len(v["samples"]) < self.sample_rows  # type: ignore[arg-type]
        }
        if room and result.rejected.height:
            for key, samples in _samples(result, chunk, numbers, room).items():
                self.by_rule[key]["samples"].extend(samples)  # type: ignore[attr-defined]

    def violations(self) -> list[dict[str, object]]:
        return sorted(
            self.by_rule.values(),
            key=lambda v: (-int(v["rows"]), str(v["column_name"]), str(v["rule"])),  # type: ignore[call-overload]
        )


ChunkSink = Callable[[ValidationResult, int], None]
"""Receives each chunk's result and the stream row number of the file's first row."""


RowSelector = Callable[[pl.DataFrame], pl.Series]
"""Given a chunk as read, the boolean mask of the rows to validate (a customer shard's rows)."""


def validate_file(
    path: Path,
    table: str,
    week_key: str | None,
    validator: StreamValidator,
    options: ContractOptions,
    on_chunk: ChunkSink | None = None,
    select: RowSelector | None = None,
) -> FileReport:
    """Validate one file chunk by chunk with ``validator`` (which may carry keys of earlier files).

    ``week_key`` (an ISO Monday, or None for a file not named after its week) adds the rule
    ``week_start_matches_landing_week``. An unreadable file leaves ``validator`` as it was, and
    its report has ``rows=None``; ``on_chunk`` may then have seen chunks of it that must be dropped.
    ``select`` validates only the rows it selects (one customer shard of the file), keeping their row
    numbers in the file; the report then counts those rows, and "header only" still means the file.
    """
    report = FileReport(file=str(path), table=table)
    week: dt.date | None = None
    if week_key is not None:
        try:
            week = dt.date.fromisoformat(week_key)
        except ValueError:
            week = None  # a file not named after its week: no landing-week rule
    mark = validator.mark()
    start = validator.rows_seen
    summary = _Summary(options.sample_rows)
    rows = rejected = file_rows = 0
    columns: list[str] = []
    try:
        for chunk in read_chunks(path, options.chunk_rows):
            columns = columns or chunk.columns
            numbers = pl.int_range(file_rows, file_rows + chunk.height, eager=True, dtype=pl.Int64) + start
            file_rows += chunk.height
            if select is not None:
                mask = select(chunk)
                chunk, numbers = chunk.filter(mask), numbers.filter(mask)
            weeks = pl.repeat(week, chunk.height, eager=True, dtype=pl.Date) if week else None
            result = validator.validate(
                chunk, landing_weeks=weeks, row_numbers=numbers if select is not None else None
            )
            rows += result.rows_in
            rejected += result.rejected_rows
            report.structural = report.structural or result.structural
            summary.add(result, chunk, numbers)
            if on_chunk is not None:
                on_chunk(result, start)
    except UnreadableFile as err:
        validator.restore(mark)
        report.rows = None
        report._file_violation(err.rule, err.detail)
        return report
    report.rows, report.rejected = rows, rejected
    report.violations = summary.violations()
    if file_rows == 0:
        _structure_of_empty_file(report, columns)
        message = f"{path}: header only, 0 rows"
        if table in options.tables_never_empty:
            report._file_violation("file_has_rows", message + f" (a week of {table} always has rows)")
        else:
            report.warnings.append(message + " (a quiet week, or a failed export?)")
    return report


def _structure_of_empty_file(report: FileReport, columns: list[str]) -> None:
    """A header-only file has no rows to reject: its wrong columns are reported with 0 rows."""
    schema = polars_schema(report.table)
    for name in schema:
        if name not in columns:
            report.violations.append(
                {
                    "column_name": name,
                    "rule": "column_present",
                    "rows": 0,
                    "example": "<missing>",
                    "samples": [],
                }
            )
            report.structural = True
    for name in columns:
        if name not in schema:
            report.violations.append(
                {
                    "column_name": name,
                    "rule": "no_unexpected_columns",
                    "rows": 0,
                    "example": "<unexpected>",
                    "samples": [],
                }
            )
            report.structural = True


def check_file(
    path: Path, table: str, week_key: str | None = None, options: ContractOptions | None = None
) -> FileReport:
    options = options or ContractOptions()
    validator = StreamValidator(table, date_bounds=options.date_bounds, keep_originals=False)
    return validate_file(path, table, week_key, validator, options)


def check_folder(folder: Path, options: ContractOptions | None = None) -> list[FileReport]:
    """One report per raw file found in ``folder`` (see ``landing.discover`` for the layout)."""
    return [check_file(f.path, f.table, f.week_key, options) for f in discover(folder, RAW_TABLES)]
