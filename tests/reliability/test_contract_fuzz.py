"""Malformed landing files: every class is a named violation, never a traceback, and loses nothing.

Each case is one file of one raw table (week 2024-01-01). Through ``churnops contracts check --json``
it must give exit 1 and a JSON document naming the file, the table, the column and the rule, with
the other files of the folder still reported; through ingestion the good rows are stored, and
quarantined + stored rows = input rows (a file that cannot be used at all keeps the stored
partition, is quarantined and named in the error). The bulk runs in process; a few cases run the
real ``churnops`` executable to check stdout is exactly one JSON document and stderr has no
traceback.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from churn_assets.cli import app
from churn_assets.ingestion.ingest import BatchRejected, ingest_partitions
from churn_assets.storage.warehouse import Warehouse, quarantine_rows, query_pl
from tests.contract_samples import WEEK, good_frame

KEY = WEEK.isoformat()
DIRECTORY = b"<a directory>"  # a case content meaning: create a folder where the file should be
CHURNOPS = Path(sys.executable).parent / "churnops"


def _csv(frame: pl.DataFrame) -> str:
    return frame.write_csv()


def _text(table: str) -> pl.DataFrame:
    """The good rows as text, as an upstream CSV export carries them."""
    return pl.read_csv(_csv(good_frame(table)).encode(), infer_schema=False)


def _set(frame: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column], strict=False))


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _good_parquet(table: str) -> bytes:
    return _parquet(good_frame(table))


@dataclass(frozen=True)
class Case:
    name: str
    table: str
    suffix: str
    content: Callable[[], bytes]
    column: str  # the column the violation names ("<file>" for file-level ones)
    rule: str  # prefix of the rule
    rows: int | None  # rows in the file; None = unreadable
    kept: int | None  # good rows ingestion stores; None = the file cannot be used at all


def _row_case(name: str, table: str, column: str, rule: str, frame: pl.DataFrame, kept: int | None) -> Case:
    return Case(name, table, ".csv", lambda: _csv(frame).encode(), column, rule, frame.height, kept)


def _pq_case(name: str, table: str, column: str, rule: str, frame: pl.DataFrame, kept: int) -> Case:
    return Case(name, table, ".parquet", lambda: _parquet(frame), column, rule, frame.height, kept)


def _file_case(name: str, table: str, suffix: str, content: Callable[[], bytes], rule: str) -> Case:
    return Case(name, table, suffix, content, "<file>", rule, None, None)


acc, use, bil, tic = _text("accounts"), _text("usage"), _text("billing"), _text("support_tickets")
acc_pq, use_pq, bil_pq = good_frame("accounts"), good_frame("usage"), good_frame("billing")
good_accounts_csv = _csv(acc)

CASES = [
    # --- per-row problems: the other rows are kept --------------------------------------------
    _pq_case(
        "lossy_float_in_int_parquet",
        "accounts",
        "num_lines",
        "dtype(Int64)",
        acc_pq.with_columns(pl.Series("num_lines", [1.0, 2.5, 4.0])),
        2,
    ),
    _pq_case(
        "all_lossy_floats_parquet",
        "accounts",
        "num_lines",
        "dtype(Int64)",
        acc_pq.with_columns(pl.Series("num_lines", [1.5, 2.5, 4.5])),
        0,
    ),
    _pq_case(
        "time_of_day_in_date_column_parquet",
        "accounts",
        "signup_date",
        "dtype(Date)",
        acc_pq.with_columns(
            pl.col("signup_date").cast(pl.Datetime("us")).dt.offset_by(pl.Series(["0h", "13h", "0h"]))
        ),
        2,
    ),
    _pq_case(
        "int_out_of_bool_range_parquet",
        "billing",
        "previous_paid_late",
        "dtype(Boolean)",
        bil_pq.with_columns(pl.Series("previous_paid_late", [0, 0, 2])),
        2,
    ),
    _pq_case(
        "negative_amount_parquet",
        "billing",
        "invoice_amount",
        "greater_than_or_equal_to(0)",
        _set(bil_pq, "invoice_amount", 1, -5.0),
        2,
    ),
    _pq_case(
        "infinity_parquet",
        "usage",
        "data_gb",
        "less_than_or_equal_to",
        _set(use_pq, "data_gb", 0, float("inf")),
        2,
    ),
    _row_case("wrong_type_text", "usage", "calls", "dtype(Int64)", _set(use, "calls", 1, "lots"), 2),
    _row_case("float_text_in_int", "usage", "sms", "dtype(Int64)", _set(use, "sms", 2, "1.5"), 2),
    _row_case(
        "huge_integer", "accounts", "customer_id", "dtype(Int64)", _set(acc, "customer_id", 2, "9" * 25), 2
    ),
    _row_case("huge_float", "usage", "data_gb", "less_than_or_equal_to", _set(use, "data_gb", 0, "1e308"), 2),
    _row_case("nan_text", "usage", "call_minutes", "not_nullable", _set(use, "call_minutes", 0, "NaN"), 2),
    _row_case(
        "duplicate_key", "billing", "invoice_id", "field_uniqueness", _set(bil, "invoice_id", 2, "10"), 2
    ),
    _row_case(
        "duplicate_compound_key",
        "usage",
        "customer_id|week_start",
        "multiple_fields_uniqueness",
        _set(use, "customer_id", 2, "1"),
        2,
    ),
    _row_case(
        "impossible_date",
        "accounts",
        "signup_date",
        "dtype(Date)",
        _set(acc, "signup_date", 0, "2024-13-45"),
        2,
    ),
    _row_case(
        "implausibly_old_date",
        "accounts",
        "signup_date",
        "date_in_range",
        _set(acc, "signup_date", 0, "1900-01-01"),
        2,
    ),
    _row_case(
        "far_future_date", "billing", "due_date", "date_in_range", _set(bil, "due_date", 0, "2999-01-01"), 2
    ),
    _row_case(
        "bad_datetime",
        "support_tickets",
        "opened_at",
        "dtype(Datetime",
        _set(tic, "opened_at", 1, "yesterday"),
        2,
    ),
    _row_case("unknown_category", "accounts", "plan_type", "isin", _set(acc, "plan_type", 1, "Basic"), 2),
    _row_case("null_in_required", "accounts", "region", "not_nullable", _set(acc, "region", 1, None), 2),
    _row_case(
        "bool_not_bool",
        "accounts",
        "paperless_billing",
        "dtype(Boolean)",
        _set(acc, "paperless_billing", 0, "maybe"),
        2,
    ),
    _row_case(
        "cross_column_rule",
        "billing",
        "due_date|invoice_date",
        "due_date_after_invoice_date",
        _set(bil, "due_date", 0, "2023-12-01"),
        2,
    ),
    _row_case(
        "wrong_landing_week",
        "usage",
        "week_start",
        "week_start_matches_landing_week",
        _set(use, "week_start", 0, "2024-01-08"),
        2,
    ),
    Case(
        "bom_with_a_bad_row",
        "accounts",
        ".csv",
        lambda: b"\xef\xbb\xbf" + _csv(_set(acc, "num_lines", 0, "0")).encode(),
        "num_lines",
        "greater_than_or_equal_to(1)",
        3,
        2,
    ),
    Case(
        "crlf_with_a_bad_row",
        "accounts",
        ".csv",
        lambda: _csv(_set(acc, "region", 2, "mars")).replace("\n", "\r\n").encode(),
        "region",
        "isin",
        3,
        2,
    ),
    Case(
        "truncated_last_line",
        "accounts",
        ".csv",
        lambda: good_accounts_csv.rstrip("\n")[:-30].encode(),
        "paperless_billing",
        "not_nullable",
        3,
        2,
    ),
    Case(
        "blank_line_in_the_middle",
        "usage",
        ".csv",
        lambda: _csv(use).replace("\n", "\n\n", 2).replace("\n\n", "\n", 1).encode(),
        "customer_id",
        "not_nullable",
        4,
        3,
    ),
    # --- the file's structure: no row can be kept ----------------------------------------------
    _row_case("missing_column", "usage", "sms", "column_present", use.drop("sms"), None),
    _row_case(
        "extra_column",
        "usage",
        "shoe_size",
        "no_unexpected_columns",
        use.with_columns(shoe_size=pl.lit("4")),
        None,
    ),
    Case(
        "duplicate_column_name",
        "usage",
        ".csv",
        lambda: _csv(use).replace("sms", "calls", 1).encode(),
        "sms",
        "column_present",
        3,
        None,
    ),
    # --- files that cannot be used at all --------------------------------------------------------
    _file_case("empty_csv", "accounts", ".csv", lambda: b"", "file_readable(empty)"),
    _file_case(
        "directory_named_like_a_file", "billing", ".csv", lambda: DIRECTORY, "file_readable(not_a_file)"
    ),
    _file_case("empty_parquet", "accounts", ".parquet", lambda: b"", "file_readable(empty)"),
    _file_case(
        "latin1_csv",
        "accounts",
        ".csv",
        lambda: _csv(_set(acc, "region", 0, "nörth")).encode("latin-1"),
        "file_readable(encoding)",
    ),
    _file_case(
        "mixed_encodings",
        "accounts",
        ".csv",
        lambda: (
            good_accounts_csv.encode()
            + "2024-01-01,4,2021-01-01,basic,one_year,credit_card,online,north,consumer,25-34,1,9.5,caf\xe9\n".encode(
                "latin-1"
            )
        ),
        "file_readable(encoding)",
    ),
    _file_case(
        "utf16_csv", "accounts", ".csv", lambda: good_accounts_csv.encode("utf-16"), "file_readable(encoding)"
    ),
    _file_case("binary_csv", "usage", ".csv", lambda: bytes(range(256)) * 8, "file_readable(encoding)"),
    _file_case(
        "binary_parquet", "usage", ".parquet", lambda: bytes(range(256)) * 8, "file_readable(not_parquet)"
    ),
    _file_case(
        "csv_named_parquet", "usage", ".parquet", lambda: _csv(use).encode(), "file_readable(not_parquet)"
    ),
    _file_case(
        "truncated_parquet",
        "usage",
        ".parquet",
        lambda: _good_parquet("usage")[: len(_good_parquet("usage")) // 2],
        "file_readable(not_parquet)",
    ),
    _file_case(
        "corrupt_parquet_pages",
        "usage",
        ".parquet",
        lambda: _good_parquet("usage")[:4] + b"\x00" * 60 + _good_parquet("usage")[64:],
        "file_readable(corrupt_parquet)",
    ),
    _file_case(
        "unterminated_quote",
        "usage",
        ".csv",
        lambda: (_csv(use) + '2024-01-01,"4,1,1.0,1.0,1\n').encode(),
        "file_readable(malformed_csv)",
    ),
    _file_case(
        "too_many_fields",
        "usage",
        ".csv",
        lambda: (_csv(use) + "2024-01-01,4,1,1.0,1.0,1,99\n").encode(),
        "file_readable(malformed_csv)",
    ),
    Case(
        "header_only_usage",
        "usage",
        ".csv",
        lambda: _csv(use.clear()).encode(),
        "<file>",
        "file_has_rows",
        0,
        None,
    ),
    Case(
        "header_only_parquet_usage",
        "usage",
        ".parquet",
        lambda: _parquet(use_pq.clear()),
        "<file>",
        "file_has_rows",
        0,
        None,
    ),
    Case(
        "header_only_wrong_columns",
        "accounts",
        ".csv",
        lambda: _csv(acc.clear().drop("region")).encode(),
        "region",
        "column_present",
        0,
        None,
    ),
]


def _write(folder: Path, case: Case) -> Path:
    path = folder / case.table / f"{KEY}{case.suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = case.content()
    if content == DIRECTORY:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def _bystander(folder: Path) -> Path:
    """A good file of another table in the same folder: it must still be checked and reported."""
    path = folder / "churn_events" / f"{KEY}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_csv(_text("churn_events")))
    return path


def _assert_report(document: list[dict[str, object]], case: Case, path: Path, bystander: Path) -> None:
    by_file = {entry["file"]: entry for entry in document}
    assert set(by_file) == {str(path), str(bystander)}, document
    entry = by_file[str(path)]
    assert entry["table"] == case.table
    assert entry["rows"] == case.rows
    named = [(v["column_name"], v["rule"]) for v in entry["violations"]]  # type: ignore[union-attr]
    assert any(c == case.column and str(r).startswith(case.rule) for c, r in named), named
    if case.kept is not None:
        assert entry["rejected"] == case.rows - case.kept
    assert by_file[str(bystander)]["violations"] == [] and by_file[str(bystander)]["rows"] == 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_contracts_check_names_file_table_column_rule(tmp_path: Path, case: Case) -> None:
    path, bystander = _write(tmp_path, case), _bystander(tmp_path)
    result = CliRunner().invoke(app, ["contracts", "check", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    _assert_report(json.loads(result.stdout), case, path, bystander)


def _stored(warehouse: Warehouse, table: str) -> int:
    with warehouse.connect(read_only=True) as con:
        return int(query_pl(con, f"SELECT count(*) AS n FROM raw.{table}").item())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ingestion_keeps_good_rows_and_quarantines_the_rest(tmp_path: Path, case: Case) -> None:
    landing = tmp_path / "landing"
    path = _write(landing, case)
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.connect() as con:
        if case.kept is None:
            with pytest.raises(BatchRejected) as raised:
                ingest_partitions(con, landing, case.table, [KEY])
            assert str(path) in str(raised.value) and case.rule in str(raised.value)
        else:
            report = ingest_partitions(con, landing, case.table, [KEY])
            assert report.rows_in == case.rows
        quarantined = quarantine_rows(con, case.table)
    stored = _stored(warehouse, case.table)
    assert set(quarantined["source_file"].unique()) <= {str(path)}
    rows = quarantined.filter(pl.col("row_index").is_not_null())["row_index"].n_unique()
    if case.kept is None:
        assert stored == 0
        assert quarantined.height >= 1 and case.rule in " ".join(quarantined["rule"])
        if case.rows:  # a readable file's rows are each in quarantine
            assert rows == case.rows
    else:
        assert stored == case.kept
        assert stored + rows == case.rows
        assert any(r.startswith(case.rule) for r in quarantined["rule"])


def test_a_broken_week_does_not_stop_the_other_weeks(tmp_path: Path) -> None:
    """Week 1 is unreadable, week 2 is good: week 2 is stored, week 1 quarantined and named."""
    landing = tmp_path / "landing"
    bad = landing / "usage" / f"{KEY}.csv"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"week_start,customer_id\n2024-01-01,caf\xe9\n")
    later = good_frame("usage").with_columns(pl.col("week_start") + pl.duration(days=7))
    later_key = later["week_start"][0].isoformat()
    later.write_parquet(landing / "usage" / f"{later_key}.parquet")
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.connect() as con:
        with pytest.raises(BatchRejected, match=r"file_readable\(encoding\)") as raised:
            ingest_partitions(con, landing, "usage", [KEY, later_key])
        quarantined = quarantine_rows(con, "usage")
    assert str(bad) in str(raised.value)
    assert raised.value.report.rows_accepted == 3
    assert _stored(warehouse, "usage") == 3
    assert quarantined.select("source_file", "rule").rows() == [(str(bad), "file_readable(encoding)")]


def test_the_real_command_prints_one_json_document_and_no_traceback(tmp_path: Path) -> None:
    """A few cases through the installed ``churnops``: stdout is exactly one JSON document."""
    picked = {
        "latin1_csv",
        "corrupt_parquet_pages",
        "empty_csv",
        "lossy_float_in_int_parquet",
        "unterminated_quote",
    }
    folder = tmp_path / "drop"
    paths = {}
    for case in CASES:
        if case.name in picked:
            # one file per table and week: give each its own table folder by week key
            path = folder / case.table / f"{KEY}-{case.name}{case.suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(case.content())
            paths[str(path)] = case
    bystander = _bystander(folder)
    done = subprocess.run(
        [str(CHURNOPS), "contracts", "check", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    document = json.loads(done.stdout)
    by_file = {entry["file"]: entry for entry in document}
    assert set(by_file) == set(paths) | {str(bystander)}
    for file, case in paths.items():
        named = [(v["column_name"], v["rule"]) for v in by_file[file]["violations"]]
        assert any(c == case.column and r.startswith(case.rule) for c, r in named), (case.name, named)
    # The human report names every file too, and still no traceback.
    human = subprocess.run(
        [str(CHURNOPS), "contracts", "check", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert human.returncode == 1 and "Traceback" not in human.stderr + human.stdout
    for file in paths:
        assert file in human.stdout


VALID_VARIANTS = {
    "utf8_bom": ("accounts", ".csv", lambda: b"\xef\xbb\xbf" + good_accounts_csv.encode()),
    "crlf": ("accounts", ".csv", lambda: good_accounts_csv.replace("\n", "\r\n").encode()),
    "whole_floats_in_int_parquet": (
        "accounts",
        ".parquet",
        lambda: _parquet(acc_pq.with_columns(pl.col("num_lines").cast(pl.Float64))),
    ),
    "padded_numbers": ("usage", ".csv", lambda: _csv(_set(use, "calls", 0, " 12 ")).encode()),
    "utc_timestamps_parquet": (
        "support_tickets",
        ".parquet",
        lambda: _parquet(
            good_frame("support_tickets").with_columns(pl.col("opened_at").dt.replace_time_zone("UTC"))
        ),
    ),
}


@pytest.mark.parametrize("variant", sorted(VALID_VARIANTS))
def test_valid_variants_are_accepted_whole(tmp_path: Path, variant: str) -> None:
    """What is not malformed stays accepted: a BOM, CRLF line ends, 2.0 for 2, padded numbers,
    timezone-aware timestamps (converted to UTC)."""
    table, suffix, content = VALID_VARIANTS[variant]
    case = Case(variant, table, suffix, content, "", "", 3, 3)
    path = _write(tmp_path / "landing", case)
    result = CliRunner().invoke(app, ["contracts", "check", str(tmp_path / "landing"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["violations"] == []
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.connect() as con:
        report = ingest_partitions(con, tmp_path / "landing", table, [KEY])
    assert (report.rows_in, report.rows_rejected, _stored(warehouse, table)) == (3, 0, 3), path
