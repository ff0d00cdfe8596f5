"""Feature registry rows, its rich table, and feature → model dependency records."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest
from rich.console import Console

from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.registry import (
    models_using,
    record_model_features,
    registry_rows,
    render_registry_table,
)

KEYS = [
    "group",
    "feature",
    "dtype",
    "description",
    "owner",
    "entity",
    "update_frequency",
    "ttl_days",
    "sources",
]


def test_registry_rows_cover_every_declared_feature() -> None:
    rows = registry_rows()
    assert len(rows) == 45
    assert all(list(row) == KEYS for row in rows)
    assert len({row["feature"] for row in rows}) == 45
    usage = next(r for r in rows if r["feature"] == "calls_last_30d")
    assert usage["group"] == "customer_usage"
    assert usage["dtype"] == "float64"
    assert usage["update_frequency"] == "hourly"
    assert usage["ttl_days"] == 35
    assert usage["sources"] == ["raw.usage", "raw.engagement", "raw.support_tickets"]
    assert json.loads(json.dumps(rows)) == rows  # JSON-ready as is


def test_render_registry_table_has_one_line_per_feature() -> None:
    table = render_registry_table(registry_rows())
    assert table.row_count == 45
    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    for group in FEATURE_GROUPS:
        assert group.name in text
        assert group.owner in text


def test_record_and_query_model_dependencies() -> None:
    con = duckdb.connect()
    t = dt.datetime(2024, 5, 6)
    n = record_model_features(con, "churn_lgbm", "1", ["tenure_days", "customer_usage"], recorded_at=t)
    assert n == 10
    record_model_features(con, "churn_lgbm", 2, ["tenure_days"], recorded_at=t + dt.timedelta(days=7))
    assert models_using(con, "tenure_days") == [
        {
            "model_name": "churn_lgbm",
            "model_version": "2",
            "group_name": "customer_account",
            "recorded_at": t + dt.timedelta(days=7),
        },
        {
            "model_name": "churn_lgbm",
            "model_version": "1",
            "group_name": "customer_account",
            "recorded_at": t,
        },
    ]
    assert [m["model_version"] for m in models_using(con, "customer_usage:sms_last_30d")] == ["1"]
    # Re-recording a version replaces its features.
    assert record_model_features(con, "churn_lgbm", "1", ["segment"], recorded_at=t) == 1
    assert [m["model_version"] for m in models_using(con, "tenure_days")] == ["2"]
    assert models_using(con, "sms_last_30d") == []
    (columns,) = con.execute(
        "SELECT list(column_name ORDER BY column_index) FROM duckdb_columns() "
        "WHERE schema_name = 'features' AND table_name = 'model_dependencies'"
    ).fetchall()[0]
    assert columns == ["model_name", "model_version", "feature", "group_name", "recorded_at"]


def test_unknown_feature_is_rejected() -> None:
    con = duckdb.connect()
    with pytest.raises(KeyError):
        record_model_features(con, "m", "1", ["no_such_feature"])
    assert models_using(con, "tenure_days") == []
