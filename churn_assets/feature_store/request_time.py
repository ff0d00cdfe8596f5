"""Features computed at request time from events the caller sends (docs/serving.md, "Request-time features").

The support-ticket features (``TICKET_FEATURES``: tickets in the last 30 / 90 days, unresolved tickets,
mean satisfaction) are recomputed from the customer's tickets of the 90 days before the request's clock
by the SQL the offline snapshots use (``transforms.TICKET_AGGREGATES`` / ``TICKET_WINDOW`` /
``TICKET_FEATURES``), in an in-memory DuckDB: the same events give the same values online and offline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from churn_assets.feature_store.transforms import TICKET_AGGREGATES, TICKET_FEATURES, TICKET_WINDOW

TICKET_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("opened_at", pa.timestamp("us")),
        ("resolution_hours", pa.float64()),
        ("satisfaction", pa.int64()),
    ]
)
_QUERY = f"""
WITH w AS (SELECT $as_of::TIMESTAMP AS as_of),
t AS (SELECT * FROM tickets),
agg AS (
    SELECT t.customer_id, {TICKET_AGGREGATES}
    FROM t, w WHERE {TICKET_WINDOW} GROUP BY ALL
)
SELECT ids.customer_id, {", ".join(f"{sql} AS {name}" for name, sql in TICKET_FEATURES.items())}
FROM (SELECT unnest($ids::BIGINT[]) AS customer_id) ids LEFT JOIN agg t USING (customer_id)
"""


def ticket_features(
    tickets: Mapping[int, Sequence[Mapping[str, Any]]], as_of: dt.datetime
) -> dict[int, dict[str, Any]]:
    """The ticket features at ``as_of`` per customer from ``tickets`` (customer id -> that customer's tickets:
    ``opened_at``, ``resolution_hours``, ``satisfaction``; an empty list is "no tickets"). As offline, only
    tickets opened in the 90 days before ``as_of`` count: older ones and those opened at or after it do
    not."""
    rows = []
    for cid, items in tickets.items():
        for ticket in items:
            rows.append(
                {
                    "customer_id": cid,
                    "opened_at": ticket["opened_at"],
                    "resolution_hours": ticket.get("resolution_hours"),
                    "satisfaction": ticket.get("satisfaction"),
                }
            )
    table = pa.Table.from_pylist(rows, schema=TICKET_SCHEMA)
    with duckdb.connect() as con:
        con.register("tickets", table)
        cursor = con.execute(_QUERY, {"as_of": as_of, "ids": list(tickets)})
        columns = [d[0] for d in cursor.description]
        result = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return {row.pop("customer_id"): row for row in result}
