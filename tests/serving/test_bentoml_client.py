"""BentoML's own clients against the real service: ``bentoml.SyncHTTPClient`` and ``bentoml.AsyncHTTPClient``
discover the mounted fast-path endpoints from ``/schema.json`` and call them, with the API key as their
``token``; their answers equal the plain HTTP answers."""

from __future__ import annotations

import asyncio

import bentoml
import httpx
import pytest
from bentoml.exceptions import BentoMLException

from churn_assets.serving.bentoml_schema import fast_path_routes
from tests.serving.conftest import MAX_BATCH_SIZE, Service
from tests.serving.test_service_http import _features_of

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]


def test_schema_json_lists_the_fast_path_endpoints(service: Service) -> None:
    schema = httpx.get(f"{service.url}/schema.json", timeout=10).json()
    routes = {r["name"]: r for r in schema["routes"]}
    assert {"predict", "predict_features"} <= set(routes)
    assert routes["predict"]["route"] == "/predict"
    assert routes["predict"]["input"]["required"] == ["customer_ids"]
    assert routes["predict"]["input"]["properties"]["customer_ids"]["maxItems"] == MAX_BATCH_SIZE
    assert "predictions" in routes["predict_features"]["output"]["properties"]
    assert schema["name"] == "churn_service"  # BentoML's own document, extended


def test_sync_client_predicts_like_plain_http(service: Service) -> None:
    ids = [4, 5, 999_999]
    with service.client() as http:
        expected = http.post("/predict", json={"customer_ids": ids}).json()
    with bentoml.SyncHTTPClient(service.url, token=service.api_key) as client:
        got = client.predict(customer_ids=ids)
        row = {"customer_id": 4, **_features_of(service, 4)}
        by_rows = client.predict_features(rows=[row])
    assert got == expected
    assert [p["customer_id"] for p in got["predictions"]] == ids
    assert "error" in got["predictions"][2]
    assert by_rows["predictions"][0]["probability"] == pytest.approx(got["predictions"][0]["probability"])


def test_sync_client_without_the_key_gets_the_services_401(service: Service) -> None:
    with (
        bentoml.SyncHTTPClient(service.url) as client,
        pytest.raises(BentoMLException, match="x-api-key") as err,
    ):
        client.predict(customer_ids=[4])
    assert int(err.value.error_code) == 401


def test_async_client_predicts(service: Service) -> None:
    async def call() -> dict[str, object]:
        async with bentoml.AsyncHTTPClient(service.url, token=service.api_key) as client:
            result: dict[str, object] = await client.predict(customer_ids=[6, 7])
            return result

    got = asyncio.run(call())
    with service.client() as http:
        expected = http.post("/predict", json={"customer_ids": [6, 7]}).json()
    assert got == expected


def test_routes_come_from_the_request_models() -> None:
    predict, by_rows = fast_path_routes()
    assert predict["input"]["properties"]["explain"]["type"] == "boolean"
    assert by_rows["input"]["properties"]["rows"]["items"] == {"$ref": "#/$defs/FeatureRow"}
    assert "tenure_days" in by_rows["input"]["$defs"]["FeatureRow"]["properties"]
