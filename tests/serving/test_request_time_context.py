"""``/predict`` with request-time context, through the fast-path app in process (a real Runtime, SQLite
online store, LightGBM model): the ticket features are computed in the request from the sent tickets,
scored, and named in ``live_features``; bad context gets 422."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from churn_assets.feature_store.request_time import ticket_features
from churn_assets.feature_store.transforms import TICKET_FEATURES
from churn_assets.serving.app import build_app
from churn_assets.serving.openapi import openapi_spec
from churn_assets.serving.runtime import Runtime
from tests.serving_helpers import AS_OF, in_process_runtime

TICKETS = [
    {"opened_at": "2025-05-30T09:00:00Z", "resolution_hours": None},
    {"opened_at": "2025-04-20T09:00:00Z", "resolution_hours": 3.5, "satisfaction": 2},
]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with in_process_runtime(tmp_path, 20, require_api_key=False) as rt:
        yield rt


def _post(rt: Runtime, path: str, body: dict[str, Any]) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(rt.settings, lambda: rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body)

    return asyncio.run(call())


def test_context_features_are_computed_in_the_request_and_named(runtime: Runtime) -> None:
    r = _post(
        runtime,
        "/predict",
        {"customer_ids": [3, 4], "context": [{"customer_id": 3, "support_tickets": TICKETS}]},
    )
    assert r.status_code == 200, r.text
    live_item, stored_item = r.json()["predictions"]
    assert live_item["live_features"] == sorted(TICKET_FEATURES)
    assert "live_features" not in stored_item or stored_item["live_features"] is None

    # The score is the model's on the stored row with the ticket features recomputed from the tickets.
    tickets = [
        {"opened_at": dt.datetime(2025, 5, 30, 9), "resolution_hours": None, "satisfaction": None},
        {"opened_at": dt.datetime(2025, 4, 20, 9), "resolution_hours": 3.5, "satisfaction": 2},
    ]
    live = ticket_features({3: tickets}, AS_OF)[3]
    assert live == {
        "support_tickets_last_30d": 1,
        "support_tickets_last_90d": 2,
        "unresolved_tickets_90d": 1,
        "avg_ticket_satisfaction_90d": 2.0,
    }
    row = {**runtime.features_for([3])[3], **live}
    expected = runtime.score_rows([3], [row], explain=False).items[0]["probability"]
    assert live_item["probability"] == pytest.approx(expected, abs=1e-12)
    without = _post(runtime, "/predict", {"customer_ids": [3]}).json()["predictions"][0]
    assert without.get("live_features") is None


def test_context_after_the_clock_or_of_other_customers_changes_nothing_it_should_not(
    runtime: Runtime,
) -> None:
    future = {"opened_at": "2025-06-03T00:00:00Z"}  # after the serving clock (2025-06-02): not counted
    body = {
        "customer_ids": [3],
        "context": [
            {"customer_id": 3, "support_tickets": TICKETS[:1]},
            {"customer_id": 3, "support_tickets": [TICKETS[1], future]},  # entries of one customer merge
            {"customer_id": 5, "support_tickets": TICKETS},  # not requested: ignored
        ],
    }
    merged = _post(runtime, "/predict", body).json()["predictions"]
    once = _post(
        runtime,
        "/predict",
        {"customer_ids": [3], "context": [{"customer_id": 3, "support_tickets": TICKETS}]},
    )
    assert [p["customer_id"] for p in merged] == [3]
    assert merged[0]["probability"] == once.json()["predictions"][0]["probability"]


@pytest.mark.parametrize(
    ("ticket", "field"),
    [
        ({"opened_at": "2025-05-01T00:00:00Z", "satisfaction": 9}, "satisfaction"),
        ({"opened_at": "yesterday"}, "opened_at"),
        ({"opened_at": "2025-05-01T00:00:00"}, "opened_at"),  # no UTC offset
        ({"opened_at": 1748736000}, "opened_at"),  # epoch seconds: not a date-time string
    ],
)
def test_a_ticket_outside_the_contract_gets_422_naming_the_field(
    runtime: Runtime, ticket: dict[str, Any], field: str
) -> None:
    r = _post(
        runtime,
        "/predict",
        {"customer_ids": [3], "context": [{"customer_id": 3, "support_tickets": [ticket]}]},
    )
    assert r.status_code == 422
    assert any(d["field"] == f"context.0.support_tickets.0.{field}" for d in r.json()["detail"]), r.text


def test_an_explicit_as_of_moves_the_windows(runtime: Runtime) -> None:
    later = {
        "customer_ids": [3],
        "as_of": "2025-07-10T00:00:00Z",
        "context": [{"customer_id": 3, "support_tickets": TICKETS}],
    }
    assert _post(runtime, "/predict", later).status_code == 200
    # 2025-07-10: the May ticket is older than 30 days, the April one still within 90.
    values = ticket_features(
        {
            3: [
                {"opened_at": dt.datetime(2025, 5, 30, 9)},
                {"opened_at": dt.datetime(2025, 4, 20, 9), "resolution_hours": 3.5, "satisfaction": 2},
            ]
        },
        dt.datetime(2025, 7, 10),
    )[3]
    assert (values["support_tickets_last_30d"], values["support_tickets_last_90d"]) == (0, 2)


def test_the_openapi_document_declares_context_and_live_features() -> None:
    schemas = openapi_spec()["components"]["schemas"]
    assert {"context", "as_of"} <= set(schemas["PredictRequest"]["properties"])
    assert "support_tickets" in schemas["CustomerContext"]["properties"]
    assert "live_features" in schemas["Prediction"]["properties"]
