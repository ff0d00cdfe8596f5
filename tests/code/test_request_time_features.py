"""Request-time ticket features equal the offline snapshot's for the same events (no train/serve skew)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from churn_assets.feature_store.request_time import ticket_features
from churn_assets.feature_store.transforms import TICKET_FEATURES, compute_snapshots
from churn_assets.simulation import World
from tests.simulation_helpers import duckdb_with_landing, small_settings


def test_ticket_features_computed_live_equal_the_offline_snapshot(tmp_path: Path) -> None:
    world = World.create(small_settings(400, history_months=3))
    weeks = world.simulate_history(tmp_path)
    as_of = dt.date.fromisoformat(sorted(weeks)[-1]) + dt.timedelta(days=7)  # the newest landed week
    con = duckdb_with_landing(tmp_path)
    snapshot = compute_snapshots(con, [as_of])
    offline = {}
    for group in snapshot.values():
        for row in group.to_pylist():
            offline.setdefault(row["customer_id"], {}).update(row)
    clock = dt.datetime.combine(as_of, dt.time())
    # The caller's view: each customer's tickets of the 90 days before the clock, as the ticket system has them.
    rows = con.execute(
        "SELECT customer_id, opened_at, resolution_hours, satisfaction FROM raw.support_tickets "
        "WHERE opened_at >= ?::TIMESTAMP - INTERVAL 90 DAY AND opened_at < ?::TIMESTAMP",
        [clock, clock],
    ).fetchall()
    tickets: dict[int, list[dict[str, object]]] = {cid: [] for cid in offline}
    for cid, opened_at, hours, satisfaction in rows:
        if cid in tickets:
            tickets[cid].append(
                {"opened_at": opened_at, "resolution_hours": hours, "satisfaction": satisfaction}
            )
    assert sum(1 for t in tickets.values() if t) >= 20  # customers with tickets, and some without
    assert any(not t for t in tickets.values())

    live = ticket_features(tickets, clock)

    for cid, values in live.items():
        for name in TICKET_FEATURES:
            assert values[name] == offline[cid][name], (cid, name)


def test_new_tickets_move_the_features() -> None:
    clock = dt.datetime(2025, 6, 2)
    tickets = [
        {"opened_at": clock - dt.timedelta(days=2), "resolution_hours": None, "satisfaction": None},
        {"opened_at": clock - dt.timedelta(days=40), "resolution_hours": 5.0, "satisfaction": 4},
        {"opened_at": clock - dt.timedelta(days=100), "resolution_hours": 1.0, "satisfaction": 1},  # too old
        {"opened_at": clock, "resolution_hours": None, "satisfaction": None},  # not before the clock
    ]
    live = ticket_features({7: tickets, 8: []}, clock)
    assert live[8]["support_tickets_last_90d"] == 0
    assert live[7] == {
        "support_tickets_last_30d": 1,
        "support_tickets_last_90d": 2,
        "unresolved_tickets_90d": 1,
        "avg_ticket_satisfaction_90d": 4.0,
    }
