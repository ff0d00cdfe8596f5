"""Run a raw-table contract and split a batch into accepted and rejected rows.

Nothing is dropped silently: every rejected row comes back with the table, the column and the
rule it broke, so that it can be stored in quarantine and reported. The steps are

1. structure: missing columns reject the whole batch (rule ``column_present``); unexpected
   columns reject it too (``no_unexpected_columns``, the contracts are strict);
2. types: each column is cast to the contract's dtype; a value that cannot be cast, or that
   the cast would change (``1.5`` into an integer column, a time of day into a date column, an
   integer beyond 2**53 into a float column), rejects its row (rule ``dtype(<Type>)``);
3. plausibility: every date and datetime column lies within the plausible range of the world
   (rule ``date_in_range(<earliest>..<latest>)``, :class:`DateBounds`);
4. the pandera contract (ranges, categories, nullability, cross-column rules, key uniqueness
   within the batch — the first occurrence of a key is kept, later ones are rejected);
5. keys already stored in earlier partitions (rule ``key_not_already_stored``), when the caller
   passes them.

A large input is validated in chunks by :class:`StreamValidator`, which carries the keys seen in
earlier chunks forward, so that chunked results equal the results of one big batch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import orjson
import pandera.errors
import polars as pl

from data_contracts.raw_tables import RAW_CONTRACTS, RULE_COLUMNS, polars_schema

ROW_INDEX = "__row__"
UNIQUENESS_CHECKS = {"field_uniqueness", "multiple_fields_uniqueness"}
REJECTION_SCHEMA = {
    "table_name": pl.String,
    "row_index": pl.Int64,
    "column_name": pl.String,
    "rule": pl.String,
    "failure_case": pl.String,
    "row_json": pl.String,
}


@dataclass(frozen=True)
class DateBounds:
    """The plausible range of every date and datetime column (inclusive bounds)."""

    earliest: dt.date = dt.date(2000, 1, 1)
    latest: dt.date = dt.date(2100, 1, 1)

    @property
    def rule(self) -> str:
        return f"date_in_range({self.earliest}..{self.latest})"


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one batch of a raw table."""

    table: str
    accepted: pl.DataFrame
    rejected: pl.DataFrame  # REJECTION_SCHEMA, one row per (row, rule) failure
    rows_in: int
    structural: bool = False  # the batch's shape broke the contract: every row rejected
    # Key columns of the rows that reached the pandera contract (for uniqueness across chunks).
    candidate_keys: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def rejected_rows(self) -> int:
        return self.rejected["row_index"].n_unique() if self.rejected.height else 0

    def violations(self) -> pl.DataFrame:
        """Summary: one row per (column, rule) with the number of rows that broke it."""
        return (
            self.rejected.group_by("column_name", "rule")
            .agg(
                pl.col("row_index").n_unique().alias("rows"), pl.col("failure_case").first().alias("example")
            )
            .sort("rows", "column_name", "rule", descending=[True, False, False])
        )

    def describe(self) -> list[str]:
        """Human-readable lines naming table, column, rule and row count."""
        return [
            f"{self.table}.{r['column_name']}: rule {r['rule']} broken by {r['rows']} row(s) "
            f"(e.g. {_short(r['example'])})"
            for r in self.violations().iter_rows(named=True)
        ]


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rejections(table: str, frame: pl.DataFrame, column: str, rule: str, cases: pl.Series) -> pl.DataFrame:
    rows = frame.select(ROW_INDEX).to_series()
    return pl.DataFrame(
        {
            "table_name": [table] * frame.height,
            "row_index": rows,
            "column_name": [column] * frame.height,
            "rule": [rule] * frame.height,
            "failure_case": cases.cast(pl.String),
        }
    )


_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def _cast_column(column: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Cast leniently: a value that does not fit becomes null (and is reported by the caller)."""
    if column.dtype != pl.String:
        return column.cast(dtype, strict=False)
    text = column.str.strip_chars()
    if dtype == pl.Date:
        return text.str.to_date("%Y-%m-%d", strict=False)
    if isinstance(dtype, pl.Datetime):
        return text.str.to_datetime(time_unit=dtype.time_unit, strict=False)
    if dtype == pl.Boolean:
        lower = text.str.to_lowercase()
        return (
            pl.select(
                pl.when(lower.is_in(_TRUE)).then(True).when(lower.is_in(_FALSE)).then(False).otherwise(None)
            )
            .to_series()
            .alias(column.name)
        )
    return text.cast(dtype, strict=False)


def _lossy(column: pl.Series, cast: pl.Series) -> pl.Series:
    """Rows whose value the cast lost or changed (``True`` = broken)."""
    broken = cast.is_null() & column.is_not_null()
    if column.dtype == pl.String:
        return broken  # text is parsed: a value that does not parse is null
    try:
        back = cast.cast(column.dtype, strict=False)
    except pl.exceptions.PolarsError:
        return broken | column.is_not_null()
    return broken | back.ne_missing(column).fill_null(True)


def _cast_to_contract(table: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Cast every column to its contract dtype; rows whose value does not cast losslessly are rejected."""
    schema = polars_schema(table)
    casts, rejected = [], []
    for name, dtype in schema.items():
        column = frame[name]
        if column.dtype == dtype:
            casts.append(column)
            continue
        try:
            cast = _cast_column(column, dtype)
        except pl.exceptions.PolarsError:  # no cast at all (e.g. a list column): every value is broken
            cast = pl.Series(name, [None] * column.len(), dtype=dtype)
        broken = _lossy(column, cast)
        cast = pl.select(pl.when(broken).then(None).otherwise(cast)).to_series().alias(name)
        if broken.any():
            bad = frame.filter(broken)
            rejected.append(_rejections(table, bad, name, f"dtype({dtype})", bad[name]))
        casts.append(cast.alias(name))
    return frame.select(ROW_INDEX).with_columns(casts), rejected


def _row_json(frame: pl.DataFrame) -> pl.DataFrame:
    """The original rows, serialized as JSON objects, keyed by row index."""
    values = frame.drop(ROW_INDEX)
    try:
        encoded = values.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    except pl.exceptions.PolarsError:  # a type polars cannot encode (e.g. binary): per row
        encoded = pl.Series(
            [orjson.dumps(r, default=str).decode() for r in values.to_dicts()], dtype=pl.String
        )
    return pl.DataFrame(
        {"row_index": frame[ROW_INDEX], "row_json": encoded},
        schema={"row_index": pl.Int64, "row_json": pl.String},
    )


def _whole_batch(table: str, frame: pl.DataFrame, column: str, rule: str, case: str) -> pl.DataFrame:
    return _rejections(table, frame, column, rule, pl.Series([case] * frame.height))


def validate_batch(
    table: str,
    frame: pl.DataFrame,
    *,
    stored_keys: pl.DataFrame | None = None,
    landing_weeks: pl.Series | None = None,
    date_bounds: DateBounds | None = None,
    seen_keys: pl.DataFrame | None = None,
    row_offset: int = 0,
    keep_originals: bool = True,
    row_numbers: pl.Series | None = None,
) -> ValidationResult:
    """Validate ``frame`` against the contract of ``table``.

    ``stored_keys`` holds the key columns of rows already stored outside this batch's partitions;
    a row repeating one of them is rejected. ``landing_weeks`` (one date per row) is the week of
    the file each row came from; a row whose ``week_start`` differs is rejected. ``date_bounds``
    is the plausible date range (default :class:`DateBounds`). ``seen_keys`` and ``row_offset``
    serve chunked validation (:class:`StreamValidator`): keys of earlier chunks of the same batch
    (a repeat breaks the uniqueness rule as it would in one batch) and the batch row number of
    this chunk's first row; ``row_numbers`` (one per row) replaces ``row_offset`` + position when the
    frame holds some rows of a batch only (a customer shard's). ``keep_originals=False`` leaves ``row_json`` empty (a check that
    only reports needs no copy of every rejected row). Accepted rows come back cast to the
    contract dtypes, in their original order; rejected rows are described in
    ``ValidationResult.rejected``.
    """
    if table not in RAW_CONTRACTS:
        raise KeyError(f"no contract for table {table!r}; known: {', '.join(RAW_CONTRACTS)}")
    contract, keys = RAW_CONTRACTS[table]
    schema = polars_schema(table)
    bounds = date_bounds or DateBounds()
    if row_numbers is None:
        indexed = frame.with_row_index(ROW_INDEX, offset=row_offset).with_columns(
            pl.col(ROW_INDEX).cast(pl.Int64)
        )
    else:
        indexed = pl.concat([row_numbers.cast(pl.Int64).alias(ROW_INDEX).to_frame(), frame], how="horizontal")
    rejected: list[pl.DataFrame] = []

    missing = [c for c in schema if c not in frame.columns]
    extra = [c for c in frame.columns if c not in schema]
    if missing or extra:
        for col in missing:
            rejected.append(_whole_batch(table, indexed, col, "column_present", "<missing>"))
        for col in extra:
            rejected.append(_whole_batch(table, indexed, col, "no_unexpected_columns", "<unexpected>"))
        return _finish(
            table, frame, indexed, indexed.clear(), rejected, structural=True, originals=keep_originals
        )

    cast, rejected = _cast_to_contract(table, indexed)
    if landing_weeks is not None:
        # a null week_start is left to the not_nullable rule
        wrong_week = cast["week_start"].ne(landing_weeks.cast(pl.Date)).fill_null(False)
        if wrong_week.any():
            bad = cast.filter(wrong_week)
            rule = "week_start_matches_landing_week"
            rejected.append(_rejections(table, bad, "week_start", rule, bad["week_start"]))
    candidates = cast.filter(~pl.col(ROW_INDEX).is_in(_indexes(rejected)))
    rejected.extend(_implausible_dates(table, candidates, schema, bounds))

    structural = False
    if candidates.height:
        try:
            contract.validate(candidates.drop(ROW_INDEX), lazy=True)
        except pandera.errors.SchemaErrors as err:
            parts, structural = _from_failure_cases(table, candidates, err.failure_cases, keys)
            rejected.extend(parts)

    if seen_keys is not None and seen_keys.height and candidates.height:
        repeat = candidates.join(seen_keys.select(keys), on=list(keys), how="semi", nulls_equal=False)
        if repeat.height:
            rule = "field_uniqueness" if len(keys) == 1 else "multiple_fields_uniqueness"
            cases = repeat.select(pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator="|"))
            rejected.append(_rejections(table, repeat, "|".join(keys), rule, cases[:, 0]))

    if stored_keys is not None and stored_keys.height:
        clash = candidates.join(stored_keys.select(keys).unique(), on=list(keys), how="semi")
        if clash.height:
            cases = clash.select(pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator="|"))
            rejected.append(_rejections(table, clash, "|".join(keys), "key_not_already_stored", cases[:, 0]))

    accepted = candidates.filter(~pl.col(ROW_INDEX).is_in(_indexes(rejected)))
    return _finish(
        table,
        frame,
        indexed,
        accepted,
        rejected,
        structural=structural,
        candidate_keys=candidates.select(keys),
        originals=keep_originals,
    )


def _implausible_dates(
    table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType], bounds: DateBounds
) -> list[pl.DataFrame]:
    out = []
    for name, dtype in schema.items():
        if dtype != pl.Date and not isinstance(dtype, pl.Datetime):
            continue
        day = pl.col(name).cast(pl.Date)
        bad = frame.filter((day < bounds.earliest) | (day > bounds.latest))
        if bad.height:
            out.append(_rejections(table, bad, name, bounds.rule, bad[name]))
    return out


class StreamValidator:
    """Validates one logical batch of ``table`` chunk by chunk, with the results of one big batch.

    Keys accepted into the contract in earlier chunks are carried forward, so a key repeated across
    chunks is rejected with the same uniqueness rule, and row indexes count across chunks. Where the key
    holds ``week_start`` the carried keys are kept per week and a chunk is checked against the weeks it
    lands in only (a row of another week is rejected by the landing-week rule anyway), so a batch of many
    weekly files costs linear, not quadratic, time in its rows.
    """

    def __init__(
        self,
        table: str,
        *,
        stored_keys: pl.DataFrame | None = None,
        date_bounds: DateBounds | None = None,
        keep_originals: bool = True,
    ) -> None:
        self.table = table
        self.stored_keys = stored_keys
        self.date_bounds = date_bounds
        self.keep_originals = keep_originals
        self.rows_seen = 0
        self._by_week = "week_start" in RAW_CONTRACTS[table][1]
        self._seen: dict[object, list[pl.DataFrame]] = {}

    def mark(self) -> tuple[int, dict[object, list[pl.DataFrame]]]:
        """A restore point (see :meth:`restore`): forget the chunks of a file that turned out unreadable."""
        return self.rows_seen, {week: list(parts) for week, parts in self._seen.items()}

    def restore(self, mark: tuple[int, dict[object, list[pl.DataFrame]]]) -> None:
        self.rows_seen, seen = mark
        self._seen = {week: list(parts) for week, parts in seen.items()}

    def _seen_for(self, landing_weeks: pl.Series | None) -> pl.DataFrame | None:
        if self._by_week and landing_weeks is not None:
            weeks = landing_weeks.cast(pl.Date).unique().to_list()
            parts = [part for week in weeks for part in self._seen.get(week, [])]
        else:
            parts = [part for week_parts in self._seen.values() for part in week_parts]
        if not parts:
            return None
        return pl.concat(parts) if len(parts) > 1 else parts[0]

    def _remember(self, keys: pl.DataFrame) -> None:
        groups = (
            {week: part for (week,), part in keys.partition_by("week_start", as_dict=True).items()}
            if self._by_week
            else {None: keys}
        )
        for week, part in groups.items():
            bucket = self._seen.setdefault(week, [])
            bucket.append(part)
            if len(bucket) > 8:  # few large frames join faster than many small ones
                self._seen[week] = [pl.concat(bucket)]

    def validate(
        self,
        frame: pl.DataFrame,
        landing_weeks: pl.Series | None = None,
        row_numbers: pl.Series | None = None,
    ) -> ValidationResult:
        result = validate_batch(
            self.table,
            frame,
            stored_keys=self.stored_keys,
            landing_weeks=landing_weeks,
            date_bounds=self.date_bounds,
            seen_keys=self._seen_for(landing_weeks),
            row_offset=self.rows_seen,
            keep_originals=self.keep_originals,
            row_numbers=row_numbers,
        )
        self.rows_seen += frame.height
        if result.candidate_keys is not None and result.candidate_keys.height:
            self._remember(result.candidate_keys)
        return result


def _indexes(parts: list[pl.DataFrame]) -> pl.Series:
    if not parts:
        return pl.Series(ROW_INDEX, [], dtype=pl.Int64)
    return pl.concat([p.select("row_index") for p in parts])["row_index"]


def _from_failure_cases(
    table: str, candidates: pl.DataFrame, cases: pl.DataFrame, keys: tuple[str, ...]
) -> tuple[list[pl.DataFrame], bool]:
    """Map pandera failure cases (positional ``index``) back to our row indexes.

    Returns the rejections and whether a failure concerned the whole batch (no row index).
    """
    out = []
    positions = candidates[ROW_INDEX]
    schema_level = cases.filter(pl.col("index").is_null())
    for case in schema_level.iter_rows(named=True):
        out.append(_whole_batch(table, candidates, case["column"], case["check"], str(case["failure_case"])))
    per_row = cases.filter(pl.col("index").is_not_null())
    if per_row.height:
        per_row = per_row.with_columns(row_index=positions.gather(per_row["index"].cast(pl.UInt32)))
        unique_rule = pl.col("check").is_in(list(UNIQUENESS_CHECKS))
        # For a duplicated key, keep the first occurrence and reject the repeats.
        dups = per_row.filter(unique_rule)
        if dups.height:
            dup_rows = candidates.filter(pl.col(ROW_INDEX).is_in(dups["row_index"]))
            first = dup_rows.unique(subset=list(keys), keep="first", maintain_order=True)[ROW_INDEX]
            dups = dups.filter(~pl.col("row_index").is_in(first)).unique(["row_index", "check"])
        rows = pl.concat([per_row.filter(~unique_rule), dups])
        rows = rows.with_columns(
            column_name=pl.when(pl.col("check") == "multiple_fields_uniqueness")
            .then(pl.lit("|".join(keys)))
            .when(pl.col("schema_context") == "DataFrameSchema")
            .then(pl.col("check").replace_strict(RULE_COLUMNS, default="<row>"))
            .otherwise(pl.col("column"))
        )
        out.append(
            rows.select(
                pl.lit(table).alias("table_name"),
                pl.col("row_index").cast(pl.Int64),
                pl.col("column_name"),
                pl.col("check").alias("rule"),
                pl.col("failure_case").cast(pl.String),
            )
        )
    return out, schema_level.height > 0


def _finish(
    table: str,
    frame: pl.DataFrame,
    indexed: pl.DataFrame,
    accepted: pl.DataFrame,
    rejected: list[pl.DataFrame],
    *,
    structural: bool = False,
    candidate_keys: pl.DataFrame | None = None,
    originals: bool = True,
) -> ValidationResult:
    if rejected:
        failures = pl.concat(rejected, how="vertical_relaxed").unique(maintain_order=True)
        if originals:
            rows = _row_json(indexed.filter(pl.col(ROW_INDEX).is_in(failures["row_index"])))
            failures = failures.join(rows, on="row_index", how="left")
        else:
            failures = failures.with_columns(row_json=pl.lit(None, dtype=pl.String))
        failures = failures.select(list(REJECTION_SCHEMA))
    else:
        failures = pl.DataFrame(schema=REJECTION_SCHEMA)
    return ValidationResult(
        table=table,
        accepted=accepted.sort(ROW_INDEX).drop(ROW_INDEX) if accepted.height else accepted.drop(ROW_INDEX),
        rejected=failures.cast(REJECTION_SCHEMA),  # type: ignore[arg-type]
        rows_in=frame.height,
        structural=structural,
        candidate_keys=candidate_keys,
    )
