"""Every contract rule rejects a crafted bad row, names table/column/rule, and keeps good rows."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from data_contracts.raw_tables import RAW_TABLES, polars_schema
from data_contracts.validation import DateBounds, StreamValidator, validate_batch
from tests.contract_samples import WEEK, good_frame


@pytest.mark.parametrize("table", RAW_TABLES)
def test_good_rows_pass_untouched(table: str) -> None:
    frame = good_frame(table)
    result = validate_batch(table, frame, landing_weeks=pl.repeat(WEEK, frame.height, eager=True))
    assert result.rejected.height == 0, result.describe()
    assert result.accepted.equals(frame)


# (table, column to break, bad value, expected rule, expected column in the report)
CASES = [
    ("accounts", "customer_id", None, "not_nullable", "customer_id"),
    ("accounts", "customer_id", -4, "greater_than(0)", "customer_id"),
    ("accounts", "customer_id", 1, "field_uniqueness", "customer_id"),
    ("accounts", "plan_type", "gold", "isin", "plan_type"),
    ("accounts", "contract_type", "monthly", "isin", "contract_type"),
    ("accounts", "payment_method", "bitcoin", "isin", "payment_method"),
    ("accounts", "acquisition_channel", "tv", "isin", "acquisition_channel"),
    ("accounts", "region", "mars", "isin", "region"),
    ("accounts", "segment", "gov", "isin", "segment"),
    ("accounts", "age_band", "0-17", "isin", "age_band"),
    ("accounts", "num_lines", 0, "greater_than_or_equal_to(1)", "num_lines"),
    ("accounts", "monthly_revenue", 0.0, "greater_than(0)", "monthly_revenue"),
    (
        "accounts",
        "signup_date",
        dt.date(2024, 3, 1),
        "signup_not_after_landing_week",
        "signup_date|week_start",
    ),
    ("accounts", "week_start", dt.date(2024, 1, 2), "week_start_is_monday", "week_start"),
    ("usage", "calls", -1, "greater_than_or_equal_to(0)", "calls"),
    ("usage", "data_gb", 9_999.0, "less_than_or_equal_to(5000)", "data_gb"),
    ("usage", "customer_id", 1, "multiple_fields_uniqueness", "customer_id|week_start"),
    ("usage", "calls", 0, "minutes_need_calls", "calls|call_minutes"),
    ("engagement", "active_days", 8, "less_than_or_equal_to(7)", "active_days"),
    ("engagement", "sessions", 1, "active_days_need_sessions", "active_days|sessions"),
    ("billing", "invoice_id", 10, "field_uniqueness", "invoice_id"),
    ("billing", "invoice_amount", -3.0, "greater_than_or_equal_to(0)", "invoice_amount"),
    ("billing", "due_date", dt.date(2023, 12, 1), "due_date_after_invoice_date", "due_date|invoice_date"),
    (
        "billing",
        "invoice_date",
        dt.date(2024, 1, 9),
        "invoice_date_in_landing_week",
        "invoice_date|week_start",
    ),
    ("billing", "previous_days_late", 0, "days_late_only_when_late", "previous_paid_late|previous_days_late"),
    ("support_tickets", "category", "complaint", "isin", "category"),
    ("support_tickets", "satisfaction", 6, "less_than_or_equal_to(5)", "satisfaction"),
    (
        "support_tickets",
        "opened_at",
        dt.datetime(2024, 1, 8, 0, 1),
        "opened_in_landing_week",
        "opened_at|week_start",
    ),
    (
        "support_tickets",
        "resolution_hours",
        None,
        "rated_only_when_resolved",
        "satisfaction|resolution_hours",
    ),
    (
        "churn_events",
        "cancellation_date",
        dt.date(2019, 1, 1),
        "cancellation_after_signup",
        "cancellation_date|signup_date",
    ),
    (
        "churn_events",
        "cancellation_date",
        dt.date(2024, 1, 9),
        "cancellation_not_after_report",
        "cancellation_date|week_start",
    ),
    ("churn_events", "reason", "aliens", "isin", "reason"),
]


@pytest.mark.parametrize(("table", "column", "value", "rule", "reported_column"), CASES)
def test_each_rule_rejects_a_crafted_row(table, column, value, rule, reported_column) -> None:
    good = good_frame(table)
    # Break the last row; for uniqueness rules the value repeats row 0's key.
    bad_row = good.tail(1).with_columns(pl.lit(value, dtype=good.schema[column]).alias(column))
    frame = pl.concat([good.head(good.height - 1), bad_row])
    result = validate_batch(table, frame)

    assert result.rejected_rows == 1, result.describe()
    rejected = result.rejected.row(0, named=True)
    assert rejected["table_name"] == table
    assert rejected["row_index"] == frame.height - 1
    assert rejected["rule"].startswith(rule)
    assert rejected["column_name"] == reported_column
    assert result.accepted.equals(good.head(good.height - 1))
    message = "\n".join(result.describe())
    assert f"{table}.{reported_column}" in message and "1 row(s)" in message


def test_wrong_type_rejects_only_that_row_and_names_the_dtype() -> None:
    good = good_frame("usage")
    text = good.with_columns(pl.col(c).cast(pl.String) for c in good.columns if c != "week_start")
    text = text.with_columns(
        pl.when(pl.col("customer_id") == "2").then(pl.lit("lots")).otherwise("calls").alias("calls")
    )
    result = validate_batch("usage", text)
    assert result.rejected_rows == 1
    assert result.rejected.row(0, named=True)["rule"] == "dtype(Int64)"
    assert result.rejected.row(0, named=True)["failure_case"] == "lots"
    assert result.accepted["customer_id"].to_list() == [1, 3]
    assert result.accepted.schema == good.schema


def test_missing_and_unexpected_columns_reject_the_whole_batch() -> None:
    frame = good_frame("accounts").drop("region").with_columns(pl.lit(1).alias("shoe_size"))
    result = validate_batch("accounts", frame)
    assert result.structural
    assert result.accepted.height == 0
    assert result.rejected_rows == 3
    rules = {(r["column_name"], r["rule"]) for r in result.violations().to_dicts()}
    assert rules == {("region", "column_present"), ("shoe_size", "no_unexpected_columns")}


def test_row_from_the_wrong_landing_week_is_rejected() -> None:
    frame = good_frame("usage")
    weeks = pl.Series([WEEK, WEEK, WEEK + dt.timedelta(days=7)])
    result = validate_batch("usage", frame, landing_weeks=weeks)
    assert result.rejected["rule"].to_list() == ["week_start_matches_landing_week"]


def test_key_already_stored_in_another_partition_is_rejected() -> None:
    frame = good_frame("accounts")
    stored = pl.DataFrame({"customer_id": [3, 99]})
    result = validate_batch("accounts", frame, stored_keys=stored)
    assert result.rejected["rule"].to_list() == ["key_not_already_stored"]
    assert result.accepted["customer_id"].to_list() == [1, 2]


def test_rejected_rows_keep_the_original_values() -> None:
    frame = good_frame("accounts").with_columns(
        pl.when(pl.col("customer_id") == 2).then(pl.lit("gold")).otherwise("plan_type").alias("plan_type")
    )
    result = validate_batch("accounts", frame)
    row = result.rejected.row(0, named=True)
    assert '"plan_type":"gold"' in row["row_json"] and '"customer_id":2' in row["row_json"]


def _mixed_usage(n: int = 40) -> pl.DataFrame:
    """Usage rows with repeated keys far apart, bad values and a bad date, for chunking tests."""
    ids = list(range(1, n + 1))
    ids[17], ids[31], ids[38] = 3, 3, 20  # repeats of earlier keys, across chunk boundaries
    return pl.DataFrame(
        {
            "week_start": [WEEK] * n,
            "customer_id": ids,
            "calls": [(-1 if i % 9 == 4 else i % 5) for i in range(n)],
            "call_minutes": [float(i % 5) * 2.5 for i in range(n)],
            "data_gb": [(9_999.0 if i == 11 else 1.0) for i in range(n)],
            "sms": [i % 3 for i in range(n)],
        }
    ).cast(polars_schema("usage"))  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [1, 3, 7, 16])
def test_chunked_validation_equals_one_batch(chunk: int) -> None:
    frame = _mixed_usage()
    whole = validate_batch("usage", frame)
    stream = StreamValidator("usage")
    parts = [stream.validate(frame.slice(start, chunk)) for start in range(0, frame.height, chunk)]
    accepted = pl.concat([p.accepted for p in parts])
    rejected = pl.concat([p.rejected for p in parts])
    assert accepted.equals(whole.accepted)
    key = ["row_index", "column_name", "rule"]
    assert rejected.select(key).unique().sort(key).equals(whole.rejected.select(key).unique().sort(key))
    assert sum(p.rejected_rows for p in parts) == whole.rejected_rows > 0
    assert "multiple_fields_uniqueness" in set(whole.rejected["rule"])


@pytest.mark.parametrize(
    ("values", "rejected"), [([1.5, 2.5, 4.5], [0, 1, 2]), ([1.0, 2.0, 4.5], [2]), ([1.0, 2.0, 4.0], [])]
)
def test_a_lossy_cast_is_a_violation(values: list[float], rejected: list[int]) -> None:
    """A float that is not a whole number does not become an integer by truncation."""
    frame = good_frame("accounts").with_columns(pl.Series("num_lines", values))
    result = validate_batch("accounts", frame)
    assert sorted(result.rejected["row_index"].to_list()) == rejected
    assert set(result.rejected["rule"]) <= {"dtype(Int64)"}
    assert set(result.rejected["column_name"]) <= {"num_lines"}
    assert result.accepted["num_lines"].to_list() == [
        int(v) for i, v in enumerate(values) if i not in rejected
    ]
    assert result.accepted.schema == good_frame("accounts").schema


def test_implausible_dates_are_rejected_with_the_configured_bounds() -> None:
    frame = good_frame("accounts").with_columns(
        pl.Series("signup_date", [dt.date(1900, 1, 1), dt.date(2010, 12, 31), dt.date(2011, 1, 1)])
    )
    bounds = DateBounds(dt.date(2011, 1, 1), dt.date(2100, 1, 1))
    result = validate_batch("accounts", frame, date_bounds=bounds)
    assert result.rejected.select("row_index", "column_name", "rule").rows() == [
        (0, "signup_date", "date_in_range(2011-01-01..2100-01-01)"),
        (1, "signup_date", "date_in_range(2011-01-01..2100-01-01)"),
    ]


def test_default_date_bounds_admit_every_simulated_signup() -> None:
    """The derived earliest date lies before the oldest signup the simulator can draw."""
    from churn_assets.settings import Settings, SimulationSettings
    from churn_assets.simulation import World

    for sim in (
        SimulationSettings(n_customers=400),
        SimulationSettings(n_customers=400, initial_tenure_years=30),
    ):
        earliest, latest = Settings(simulation=sim).contract_date_bounds
        world = World.create(sim)
        _, tables = world.step()
        accounts = pl.from_arrow(tables["accounts"])
        assert isinstance(accounts, pl.DataFrame)
        oldest = sim.start_date - dt.timedelta(days=int(sim.initial_tenure_years * 365.25))
        assert earliest <= oldest < sim.start_date < latest
        assert (
            validate_batch("accounts", accounts, date_bounds=DateBounds(earliest, latest)).rejected.height
            == 0
        )
