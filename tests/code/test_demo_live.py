"""The demo's live-traffic cell and summary line (orchestration/demo.py) from live_traffic metadata."""

from __future__ import annotations

from pathlib import Path

from churn_assets.orchestration.demo import WeekRow, live_cell, live_summary, with_live_service
from churn_assets.settings import Settings


def test_live_cell_shows_requests_rate_p95_errors_and_versions() -> None:
    meta = {
        "requests": 300,
        "errors": 0,
        "requests_per_second": 39.6,
        "latency_p95_ms": 4.26,
        "by_variant": {"champion v1": 285, "canary v2": 15},
    }
    assert live_cell(meta) == "300 @ 40/s, P95 4.3 ms, 0 err; v1, v2"
    assert live_cell({"requests": 0, "note": "no live service"}) == "batch only"


def test_live_summary_names_the_weeks_a_new_version_answered() -> None:
    rows = [
        WeekRow(1, "w1", live_requests=300, live_versions=["v1"]),
        WeekRow(2, "w2", live_requests=300, live_errors=0, live_versions=["v1"]),
        WeekRow(3, "w3", live_requests=300, live_errors=1, live_versions=["v1", "v2"]),
    ]
    line = live_summary(rows)
    assert line.startswith("live service: 900 requests in 3 weeks, 1 failed")
    assert "week 1: v1; week 3: v1, v2" in line
    assert "no traffic" in live_summary([WeekRow(1, "w1")])


def test_with_live_service_points_the_replay_at_a_loopback_port_with_a_shared_key(tmp_path: Path) -> None:
    settings = with_live_service(Settings(home=tmp_path))
    assert settings.traffic.enabled and settings.traffic.url == f"http://127.0.0.1:{settings.serving.port}"
    assert settings.serving.api_key is not None and settings.serving.api_key.get_secret_value()
