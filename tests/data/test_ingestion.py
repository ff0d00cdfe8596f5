"""Landing files -> contracts -> raw tables and quarantine; bad input never corrupts stored data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from churn_assets.cli import app
from churn_assets.ingestion.contract_check import check_stored_partitions
from churn_assets.ingestion.contract_files import ContractOptions, FileReport, check_file
from churn_assets.ingestion.ingest import BatchRejected, MissingLandingFile, ingest_partitions
from churn_assets.ingestion.landing import landing_path
from churn_assets.settings import ContractSettings, Settings
from churn_assets.storage.warehouse import Warehouse, quarantine_rows
from data_contracts.validation import DateBounds
from tests.contract_samples import WEEK, good_frame

KEY = WEEK.isoformat()


def _land(landing: Path, table: str, frame: pl.DataFrame) -> Path:
    path = landing_path(landing, table, KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "wh.duckdb")


def _stored(warehouse: Warehouse, table: str) -> pl.DataFrame:
    with warehouse.connect(read_only=True) as con:
        return con.sql(f"SELECT * FROM raw.{table} ORDER BY 2").pl()


def test_good_week_is_stored_whole(tmp_path: Path, warehouse: Warehouse) -> None:
    frame = good_frame("accounts")
    _land(tmp_path, "accounts", frame)
    with warehouse.connect() as con:
        report = ingest_partitions(con, tmp_path, "accounts", [KEY])
    assert (report.rows_in, report.rows_accepted, report.rows_rejected) == (3, 3, 0)
    assert _stored(warehouse, "accounts").select(frame.columns).equals(frame)


def test_bad_rows_go_to_quarantine_with_their_rule(tmp_path: Path, warehouse: Warehouse) -> None:
    good = good_frame("billing")
    bad = good.head(1).with_columns(
        pl.lit(99, dtype=pl.Int64).alias("invoice_id"), pl.lit(-5.0).alias("invoice_amount")
    )
    path = _land(tmp_path, "billing", pl.concat([good, bad]))
    with warehouse.connect() as con:
        report = ingest_partitions(con, tmp_path, "billing", [KEY])
        quarantined = quarantine_rows(con, "billing")
    assert (report.rows_accepted, report.rows_rejected) == (3, 1)
    assert report.violations == [
        {"column_name": "invoice_amount", "rule": "greater_than_or_equal_to(0)", "rows": 1, "example": "-5.0"}
    ]
    row = quarantined.row(0, named=True)
    assert row["rule"] == "greater_than_or_equal_to(0)" and row["row_index"] == 3
    assert row["source_file"] == str(path) and str(row["week_start"]) == KEY
    assert _stored(warehouse, "billing")["invoice_id"].to_list() == [10, 11, 12]


def test_relanding_a_week_replaces_it_idempotently(tmp_path: Path, warehouse: Warehouse) -> None:
    _land(tmp_path, "usage", good_frame("usage"))
    with warehouse.connect() as con:
        ingest_partitions(con, tmp_path, "usage", [KEY])
        ingest_partitions(con, tmp_path, "usage", [KEY])
    assert _stored(warehouse, "usage").height == 3


def test_structurally_broken_file_leaves_stored_data_untouched(tmp_path: Path, warehouse: Warehouse) -> None:
    good = good_frame("usage")
    _land(tmp_path, "usage", good)
    with warehouse.connect() as con:
        ingest_partitions(con, tmp_path, "usage", [KEY])
    _land(tmp_path, "usage", good.drop("sms"))
    with warehouse.connect() as con, pytest.raises(BatchRejected, match=r"usage\.sms: rule column_present"):
        ingest_partitions(con, tmp_path, "usage", [KEY])
    assert _stored(warehouse, "usage").select(good.columns).equals(good)
    with warehouse.connect(read_only=True) as con:
        assert quarantine_rows(con, "usage")["rule"].unique().to_list() == ["column_present"]


def test_duplicate_key_against_an_earlier_week_is_quarantined(tmp_path: Path, warehouse: Warehouse) -> None:
    _land(tmp_path, "accounts", good_frame("accounts"))
    later = good_frame("accounts").with_columns(
        (pl.col("week_start") + pl.duration(days=7)).alias("week_start"),
        (pl.col("customer_id") + pl.Series([0, 10, 10])).alias("customer_id"),
    )
    later_key = later["week_start"][0].isoformat()
    path = landing_path(tmp_path, "accounts", later_key)
    later.write_parquet(path)
    with warehouse.connect() as con:
        ingest_partitions(con, tmp_path, "accounts", [KEY])
        report = ingest_partitions(con, tmp_path, "accounts", [later_key])
    assert report.rows_rejected == 1
    assert report.violations[0]["rule"] == "key_not_already_stored"
    assert sorted(_stored(warehouse, "accounts")["customer_id"].to_list()) == [1, 2, 3, 12, 13]


def test_missing_landing_file_names_table_and_week(tmp_path: Path, warehouse: Warehouse) -> None:
    with warehouse.connect() as con, pytest.raises(MissingLandingFile, match=r"'engagement'.*2024-01-01"):
        ingest_partitions(con, tmp_path, "engagement", [KEY])


def test_contract_check_fails_when_too_much_was_quarantined(tmp_path: Path, warehouse: Warehouse) -> None:
    good = good_frame("engagement")
    broken = good.head(1).with_columns(pl.lit(9, dtype=pl.Int64).alias("active_days"))
    _land(tmp_path, "engagement", broken.vstack(good.tail(2)))
    with warehouse.connect() as con:
        ingest_partitions(con, tmp_path, "engagement", [KEY])
        strict = check_stored_partitions(con, "engagement", [KEY], max_quarantine_share=0.01)
        lenient = check_stored_partitions(con, "engagement", [KEY], max_quarantine_share=0.5)
    assert not strict.passed and "1 rows quarantined" in strict.summary()
    # The row breaks two rules: the range of active_days and active_days <= sessions.
    assert {r["rule"] for r in strict.quarantine_by_rule} == {
        "less_than_or_equal_to(7)",
        "active_days_need_sessions",
    }
    assert lenient.passed and lenient.stored_rows == 2


def test_cli_contracts_check_exit_codes_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    good_frame("churn_events").write_csv(good_dir / "churn_events.csv")
    bad = good_frame("churn_events").with_columns(pl.lit("aliens").alias("reason"))
    bad.write_csv(bad_dir / "churn_events.csv")

    ok = runner.invoke(app, ["contracts", "check", str(good_dir)])
    assert ok.exit_code == 0, ok.output
    failed = runner.invoke(app, ["contracts", "check", str(bad_dir), "--json"])
    assert failed.exit_code == 1
    assert '"rule": "isin' in failed.output and '"column_name": "reason"' in failed.output
    assert '"rows": 3' in failed.output


def test_a_mostly_broken_file_keeps_the_previous_partition(tmp_path: Path, warehouse: Warehouse) -> None:
    good = good_frame("usage")
    _land(tmp_path, "usage", good)
    with warehouse.connect() as con:
        ingest_partitions(con, tmp_path, "usage", [KEY], max_reject_share=0.01)
    _land(tmp_path, "usage", good.with_columns(pl.lit(-1, dtype=pl.Int64).alias("sms")))
    with warehouse.connect() as con:
        report = ingest_partitions(con, tmp_path, "usage", [KEY], max_reject_share=0.01)
        quarantined = quarantine_rows(con, "usage")
    assert report.kept_previous == [KEY] and report.rows_rejected == 3
    assert _stored(warehouse, "usage").select(good.columns).equals(good)
    assert quarantined.height == 3


def _mixed_accounts_csv(path: Path, n: int = 60) -> None:
    """Accounts rows with keys repeated across chunks, bad categories, lossy numbers and bad dates."""
    base = good_frame("accounts")
    rows = pl.concat(
        [base.with_columns(pl.lit(i + 1, dtype=pl.Int64).alias("customer_id")) for i in range(n // 3)]
    )
    rows = pl.concat([rows, rows.head(n - rows.height)]).head(n).cast(pl.String)
    ids, plans, lines, signups = (
        rows[c].to_list() for c in ("customer_id", "plan_type", "num_lines", "signup_date")
    )
    for i in range(0, n, 7):
        ids[i] = "2"  # a repeat of an early key
    for i in range(3, n, 11):
        plans[i] = "gold"
    for i in range(5, n, 13):
        lines[i] = "1.5"
    signups[n - 1] = "1900-01-01"
    rows.with_columns(
        pl.Series("customer_id", ids),
        pl.Series("plan_type", plans),
        pl.Series("num_lines", lines),
        pl.Series("signup_date", signups),
    ).write_csv(path)


def _summary(report: FileReport) -> list[tuple[object, ...]]:
    return sorted((v["column_name"], v["rule"], v["rows"]) for v in report.violations)


def test_a_file_checked_in_small_chunks_gives_the_same_report(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    _mixed_accounts_csv(path)
    whole = check_file(path, "accounts", options=ContractOptions(chunk_rows=1_000_000, sample_rows=2))
    chunked = check_file(path, "accounts", options=ContractOptions(chunk_rows=7, sample_rows=2))
    assert _summary(chunked) == _summary(whole)
    assert (chunked.rows, chunked.rejected) == (whole.rows, whole.rejected) == (60, whole.rejected)
    rules = {v["rule"] for v in whole.violations}
    assert {"field_uniqueness", "dtype(Int64)", "date_in_range(2000-01-01..2100-01-01)"} <= rules
    for v in chunked.violations:  # at most N samples per rule, each naming its row in the file
        samples = v["samples"]
        assert isinstance(samples, list) and 1 <= len(samples) <= 2
        assert all('"customer_id"' in s["row_json"] for s in samples)
    assert [s["samples"] for s in chunked.violations] == [s["samples"] for s in whole.violations]


def test_ingestion_in_small_chunks_stores_and_quarantines_the_same_rows(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "accounts").mkdir(parents=True)
    _mixed_accounts_csv(landing / "accounts" / f"{KEY}.csv")
    outcomes = []
    for name, rows in (("whole", 1_000_000), ("chunked", 7)):
        warehouse = Warehouse(tmp_path / f"{name}.duckdb")
        with warehouse.connect() as con:
            report = ingest_partitions(
                con, landing, "accounts", [KEY], options=ContractOptions(chunk_rows=rows)
            )
            quarantined = quarantine_rows(con, "accounts").select(
                "row_index", "column_name", "rule", "row_json"
            )
        assert report.rows_accepted + quarantined["row_index"].n_unique() == report.rows_in == 60
        outcomes.append((_stored(warehouse, "accounts"), quarantined.sort(pl.all())))
    (stored_a, quarantine_a), (stored_b, quarantine_b) = outcomes
    assert stored_a.equals(stored_b) and quarantine_a.equals(quarantine_b)


def test_a_header_only_file_is_an_error_for_usage_and_a_warning_for_accounts(tmp_path: Path) -> None:
    """A week without usage means a failed export; a week without signups can be real (small worlds)."""
    folder = tmp_path / "drop"
    for table in ("usage", "accounts"):
        (folder / table).mkdir(parents=True)
        good_frame(table).clear().write_csv(folder / table / f"{KEY}.csv")
    result = CliRunner().invoke(app, ["contracts", "check", str(folder), "--json"])
    assert result.exit_code == 1
    by_table = {r["table"]: r for r in json.loads(result.stdout)}
    assert [(v["column_name"], v["rule"]) for v in by_table["usage"]["violations"]] == [
        ("<file>", "file_has_rows")
    ]
    assert by_table["accounts"]["violations"] == [] and "header only" in by_table["accounts"]["warnings"][0]

    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.connect() as con:
        report = ingest_partitions(con, folder, "accounts", [KEY])
        with pytest.raises(BatchRejected, match=r"usage/2024-01-01.csv: usage.<file>: rule file_has_rows"):
            ingest_partitions(con, folder, "usage", [KEY])
    assert report.rows_in == 0 and report.warnings and not report.broken_files


def test_default_options_follow_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        contracts=ContractSettings(chunk_rows=123, sample_rows_per_rule=2, tables_never_empty=["billing"]),
    )
    options = ContractOptions.from_settings(settings)
    assert (options.chunk_rows, options.sample_rows, options.tables_never_empty) == (123, 2, ("billing",))
    assert options.date_bounds == DateBounds(*settings.contract_date_bounds)
    assert options.date_bounds.earliest == dt.date(2011, 1, 1)  # 2023-10-02 minus 12 years of tenure


def test_the_settings_warehouse_opens_with_its_duckdb_memory_limit(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, duckdb_memory_limit="300MB")
    with Warehouse.of(settings).connect() as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert Warehouse.of(settings).path == settings.warehouse_path
    assert limit is not None and limit[0] in ("286.1 MiB", "300.0 MB")  # DuckDB shows MiB
