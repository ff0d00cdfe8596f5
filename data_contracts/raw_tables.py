"""Pandera data contracts of the six raw source tables.

Every raw table carries ``week_start``: the Monday of the week in which its rows landed (the
partition key). A contract states types, nullability, ranges, allowed categories, key
uniqueness and cross-column rules; :mod:`data_contracts.validation` turns a failed contract
into per-row rejections with the rule that failed.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from data_contracts.categories import (
    ACQUISITION_CHANNELS,
    AGE_BANDS,
    CHURN_REASONS,
    CONTRACT_TYPES,
    N_PRODUCT_FEATURES,
    PAYMENT_METHODS,
    PLAN_TYPES,
    REGIONS,
    SEGMENTS,
    TICKET_CATEGORIES,
    TICKET_PRIORITIES,
)

DAYS_IN_WEEK = pl.duration(days=7)


def _within_landing_week(column: str) -> pl.Expr:
    """``column`` (a date or datetime) falls inside the landing week."""
    day = pl.col(column).cast(pl.Date)
    return (day >= pl.col("week_start")) & (day < pl.col("week_start") + DAYS_IN_WEEK)


class _RawTable(pa.DataFrameModel):
    week_start: dt.date = pa.Field(description="Monday of the landing week (partition key).")

    @pa.check("week_start", name="week_start_is_monday")
    def _monday(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).dt.weekday() == 1)

    class Config:
        strict = True
        coerce = False


class Accounts(_RawTable):
    """One row per customer, landing in the week of signup (the initial base in week one)."""

    customer_id: int = pa.Field(gt=0, unique=True)
    signup_date: dt.date
    plan_type: str = pa.Field(isin=PLAN_TYPES)
    contract_type: str = pa.Field(isin=CONTRACT_TYPES)
    payment_method: str = pa.Field(isin=PAYMENT_METHODS)
    acquisition_channel: str = pa.Field(isin=ACQUISITION_CHANNELS)
    region: str = pa.Field(isin=REGIONS)
    segment: str = pa.Field(isin=SEGMENTS)
    age_band: str = pa.Field(isin=AGE_BANDS)
    num_lines: int = pa.Field(ge=1, le=20)
    monthly_revenue: float = pa.Field(gt=0, le=2_000)
    paperless_billing: bool

    @pa.dataframe_check(name="signup_not_after_landing_week")
    def _signup_landed(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("signup_date") < pl.col("week_start") + DAYS_IN_WEEK)


class Usage(_RawTable):
    """Network usage of one customer in one week."""

    customer_id: int = pa.Field(gt=0)
    calls: int = pa.Field(ge=0, le=5_000)
    call_minutes: float = pa.Field(ge=0, le=10_080)
    data_gb: float = pa.Field(ge=0, le=5_000)
    sms: int = pa.Field(ge=0, le=10_000)

    class Config:
        unique = ["customer_id", "week_start"]

    @pa.dataframe_check(name="minutes_need_calls")
    def _minutes_need_calls(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("calls") > 0) | (pl.col("call_minutes") == 0))


class Engagement(_RawTable):
    """App / self-care portal engagement of one customer in one week."""

    customer_id: int = pa.Field(gt=0)
    logins: int = pa.Field(ge=0, le=1_000)
    sessions: int = pa.Field(ge=0, le=2_000)
    app_minutes: float = pa.Field(ge=0, le=10_080)
    active_days: int = pa.Field(ge=0, le=7)
    features_used: int = pa.Field(ge=0, le=N_PRODUCT_FEATURES)

    class Config:
        unique = ["customer_id", "week_start"]

    @pa.dataframe_check(name="active_days_need_sessions")
    def _active_needs_sessions(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("active_days") <= pl.col("sessions"))


class Billing(_RawTable):
    """Monthly statements issued in the week, with the payment record of the previous one."""

    invoice_id: int = pa.Field(gt=0, unique=True)
    customer_id: int = pa.Field(gt=0)
    invoice_date: dt.date
    due_date: dt.date
    invoice_amount: float = pa.Field(ge=0, le=5_000)
    discount_amount: float = pa.Field(ge=0, le=2_000)
    overage_amount: float = pa.Field(ge=0, le=5_000)
    balance_forward: float = pa.Field(ge=0, le=20_000)
    previous_paid_late: bool
    previous_days_late: int = pa.Field(ge=0, le=365)

    @pa.dataframe_check(name="invoice_date_in_landing_week")
    def _invoice_in_week(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_within_landing_week("invoice_date"))

    @pa.dataframe_check(name="due_date_after_invoice_date")
    def _due_after_invoice(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("due_date") > pl.col("invoice_date"))

    @pa.dataframe_check(name="days_late_only_when_late")
    def _late_consistent(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("previous_paid_late") == (pl.col("previous_days_late") > 0))


class SupportTickets(_RawTable):
    """Support tickets opened in the week."""

    ticket_id: int = pa.Field(gt=0, unique=True)
    customer_id: int = pa.Field(gt=0)
    opened_at: dt.datetime
    category: str = pa.Field(isin=TICKET_CATEGORIES)
    priority: str = pa.Field(isin=TICKET_PRIORITIES)
    resolution_hours: float | None = pa.Field(ge=0, le=24 * 90, nullable=True)
    satisfaction: int | None = pa.Field(ge=1, le=5, nullable=True)

    @pa.dataframe_check(name="opened_in_landing_week")
    def _opened_in_week(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_within_landing_week("opened_at"))

    @pa.dataframe_check(name="rated_only_when_resolved")
    def _rated_when_resolved(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("satisfaction").is_null() | pl.col("resolution_hours").is_not_null()
        )


class ChurnEvents(_RawTable):
    """Cancellations reported in the week (reports may lag the cancellation)."""

    customer_id: int = pa.Field(gt=0, unique=True)
    signup_date: dt.date
    cancellation_date: dt.date
    reason: str = pa.Field(isin=CHURN_REASONS)
    voluntary: bool

    @pa.dataframe_check(name="cancellation_after_signup")
    def _after_signup(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("cancellation_date") >= pl.col("signup_date"))

    @pa.dataframe_check(name="cancellation_not_after_report")
    def _reported_after(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("cancellation_date") < pl.col("week_start") + DAYS_IN_WEEK)


# Table name -> (contract, key columns). Keys are unique across all stored partitions too.
RAW_CONTRACTS: dict[str, tuple[type[_RawTable], tuple[str, ...]]] = {
    "accounts": (Accounts, ("customer_id",)),
    "usage": (Usage, ("customer_id", "week_start")),
    "engagement": (Engagement, ("customer_id", "week_start")),
    "billing": (Billing, ("invoice_id",)),
    "support_tickets": (SupportTickets, ("ticket_id",)),
    "churn_events": (ChurnEvents, ("customer_id",)),
}

RAW_TABLES: tuple[str, ...] = tuple(RAW_CONTRACTS)


def polars_schema(table: str) -> dict[str, pl.DataType]:
    """Column -> polars dtype of a raw table, in contract order."""
    contract, _ = RAW_CONTRACTS[table]
    schema = contract.to_schema()
    return {name: col.dtype.type for name, col in schema.columns.items()}


# Cross-column rule -> the columns it reads (so a violation names them).
RULE_COLUMNS: dict[str, str] = {
    "signup_not_after_landing_week": "signup_date|week_start",
    "minutes_need_calls": "calls|call_minutes",
    "active_days_need_sessions": "active_days|sessions",
    "invoice_date_in_landing_week": "invoice_date|week_start",
    "due_date_after_invoice_date": "due_date|invoice_date",
    "days_late_only_when_late": "previous_paid_late|previous_days_late",
    "opened_in_landing_week": "opened_at|week_start",
    "rated_only_when_resolved": "satisfaction|resolution_hours",
    "cancellation_after_signup": "cancellation_date|signup_date",
    "cancellation_not_after_report": "cancellation_date|week_start",
}
