"""Landing files -> contracts -> raw tables and quarantine; bad input never corrupts stored data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from churn_assets.cli import app
from churn_assets.ingestion.contract_check import check_stored_partitions
from churn_assets.ingestion.ingest import BatchRejected, MissingLandingFile, ingest_partitions
from churn_assets.ingestion.landing import landing_path
from churn_assets.storage.warehouse import Warehouse, quarantine_rows
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
