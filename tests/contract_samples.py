"""Hand-made valid rows of every raw table, for contract tests (3 rows each, week 2024-01-01)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from data_contracts.raw_tables import polars_schema

WEEK = dt.date(2024, 1, 1)


def _rows(table: str) -> dict[str, list[object]]:
    d = dt.date
    if table == "accounts":
        return {
            "customer_id": [1, 2, 3],
            "signup_date": [d(2021, 5, 4), d(2023, 12, 30), d(2024, 1, 2)],
            "plan_type": ["basic", "premium", "unlimited"],
            "contract_type": ["month_to_month", "one_year", "two_year"],
            "payment_method": ["credit_card", "electronic_check", "bank_transfer"],
            "acquisition_channel": ["online", "retail", "campaign"],
            "region": ["north", "south", "west"],
            "segment": ["consumer", "consumer", "business"],
            "age_band": ["25-34", "45-54", "65+"],
            "num_lines": [1, 2, 4],
            "monthly_revenue": [25.0, 80.5, 210.0],
            "paperless_billing": [True, False, True],
        }
    if table in ("usage",):
        return {
            "customer_id": [1, 2, 3],
            "calls": [12, 0, 40],
            "call_minutes": [35.5, 0.0, 120.0],
            "data_gb": [1.2, 0.0, 9.5],
            "sms": [3, 0, 10],
        }
    if table == "engagement":
        return {
            "customer_id": [1, 2, 3],
            "logins": [2, 0, 9],
            "sessions": [3, 0, 12],
            "app_minutes": [14.0, 0.0, 61.5],
            "active_days": [2, 0, 5],
            "features_used": [3, 0, 8],
        }
    if table == "billing":
        return {
            "invoice_id": [10, 11, 12],
            "customer_id": [1, 2, 3],
            "invoice_date": [d(2024, 1, 1), d(2024, 1, 3), d(2024, 1, 7)],
            "due_date": [d(2024, 1, 22), d(2024, 1, 24), d(2024, 1, 28)],
            "invoice_amount": [25.0, 95.2, 199.0],
            "discount_amount": [0.0, 5.0, 20.0],
            "overage_amount": [0.0, 10.2, 0.0],
            "balance_forward": [0.0, 0.0, 55.0],
            "previous_paid_late": [False, False, True],
            "previous_days_late": [0, 0, 9],
        }
    if table == "support_tickets":
        t = dt.datetime
        return {
            "ticket_id": [100, 101, 102],
            "customer_id": [1, 1, 3],
            "opened_at": [t(2024, 1, 1, 9, 30), t(2024, 1, 4, 17, 0), t(2024, 1, 7, 23, 59)],
            "category": ["billing", "network", "other"],
            "priority": ["low", "high", "medium"],
            "resolution_hours": [4.5, None, 30.0],
            "satisfaction": [4, None, 5],
        }
    if table == "churn_events":
        return {
            "customer_id": [7, 8, 9],
            "signup_date": [d(2020, 1, 1), d(2023, 6, 1), d(2023, 12, 1)],
            "cancellation_date": [d(2023, 12, 26), d(2024, 1, 2), d(2024, 1, 7)],
            "reason": ["price", "competitor", "moved"],
            "voluntary": [True, True, False],
        }
    raise KeyError(table)


def good_frame(table: str) -> pl.DataFrame:
    rows = _rows(table)
    rows["week_start"] = [WEEK] * len(next(iter(rows.values())))
    schema = polars_schema(table)
    return pl.DataFrame(rows).select(list(schema)).cast(schema)  # type: ignore[arg-type]
