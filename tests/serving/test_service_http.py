"""The churn service over real HTTP (bentoml serve on a free port; Redis behind a proxy the test can cut)."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import orjson
import polars as pl
import pytest

from churn_assets.serving.prediction_log import read_predictions
from churn_assets.serving.rollout import RolloutState, RolloutStore, route
from tests.serving.conftest import N_CUSTOMERS, Service

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]


def _set_phase(service: Service, phase: str) -> None:
    store = RolloutStore(service.settings)
    state = store.load()
    state.phase = phase
    store.save(state)
    time.sleep(0.05)


def test_predict_returns_per_customer_scores_and_per_item_errors(service: Service) -> None:
    _set_phase(service, "shadow")
    with service.client() as client:
        r = client.post("/predict", json={"customer_ids": [1, 2, 999_999], "explain": True})
    assert r.status_code == 200, r.text
    items = r.json()["predictions"]
    assert [i["customer_id"] for i in items] == [1, 2, 999_999]
    for item in items[:2]:
        assert 0.0 <= item["probability"] <= 1.0
        assert item["label"] == int(item["probability"] >= item["threshold"])
        assert (item["model_version"], item["variant"]) == (service.previous, "champion")
        assert len(item["reasons"]) == 3 and {"feature", "contribution"} <= set(item["reasons"][0])
    assert "unknown customer_id 999999" in items[2]["error"]


def test_shadow_never_changes_responses_but_is_logged(service: Service) -> None:
    ids = list(range(10, 60))
    with service.client() as client:
        _set_phase(service, "none")
        before = client.post("/predict", json={"customer_ids": ids}).json()["predictions"]
        _set_phase(service, "shadow")
        since = dt.datetime.now(dt.UTC)  # the log is shared by the module's tests: only this request's rows
        during = client.post("/predict", json={"customer_ids": ids}).json()["predictions"]
    assert before == during
    assert {i["variant"] for i in during} == {"champion"}
    deadline = time.monotonic() + 10
    shadow = pl.DataFrame()
    while time.monotonic() < deadline:
        log = read_predictions(service.settings)
        shadow = log.filter(
            (pl.col("variant") == "shadow") & pl.col("customer_id").is_in(ids) & (pl.col("ts") >= since)
        )
        if shadow.height >= len(ids):
            break
        time.sleep(0.3)
    assert shadow.height >= len(ids)
    assert set(shadow["model_version"].to_list()) == {service.champion}


def test_canary_routes_by_customer_hash(service: Service) -> None:
    _set_phase(service, "canary_25")
    ids = list(range(1, N_CUSTOMERS + 1))
    with service.client() as client:
        items = []
        for start in range(0, len(ids), 100):
            r = client.post("/predict", json={"customer_ids": ids[start : start + 100]})
            assert r.status_code == 200, r.text
            items += r.json()["predictions"]
        again = client.post("/predict", json={"customer_ids": ids[:100]}).json()["predictions"]
    state = RolloutState(
        phase="canary_25", stable_version=service.previous, candidate_version=service.champion
    )
    for item in items:
        expected = route(item["customer_id"], state)
        assert item["variant"] == expected
        assert item["model_version"] == (service.champion if expected == "canary" else service.previous)
    share = sum(i["variant"] == "canary" for i in items) / len(items)
    assert 0.18 < share < 0.32  # 600 customers: SE 0.018; the 10,000-id split is tested in test_rollout
    assert [i["variant"] for i in again] == [i["variant"] for i in items[:100]]
    _set_phase(service, "shadow")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"customer_ids": [1, "x"]}', 422, "customer_ids.1"),
        (b'{"customer_ids": [1]', 422, "json_invalid"),
        (b'{"customer_ids": []}', 422, "too_short"),
        (b'{"ids": [1]}', 422, "customer_ids"),
        (orjson.dumps({"customer_ids": list(range(101))}), 413, "max_batch_size"),
        (orjson.dumps({"rows": [{"tenure_days": "long"}]}), 422, "rows.0.tenure_days"),
        (orjson.dumps({"rows": [{"no_such_feature": 1}]}), 422, "rows.0.no_such_feature"),
    ],
)
def test_bad_payloads_get_4xx_naming_the_field(
    service: Service, body: bytes, status: int, needle: str
) -> None:
    path = "/predict_features" if b"rows" in body else "/predict"
    with service.client() as client:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.text


def test_oversized_body_gets_413(service: Service) -> None:
    with service.client() as client:
        r = client.post("/predict", content=b" " * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.text


def test_predict_features_scores_explicit_rows(service: Service) -> None:
    with service.client() as client:
        by_id = client.post("/predict", json={"customer_ids": [7]}).json()["predictions"][0]
        features = {"customer_id": 7, **_features_of(service, 7)}
        r = client.post("/predict_features", json={"rows": [features]})
    assert r.status_code == 200, r.text
    item = r.json()["predictions"][0]
    assert item["probability"] == pytest.approx(by_id["probability"], abs=1e-12)


def _features_of(service: Service, cid: int) -> dict[str, object]:
    from churn_assets.feature_store.online import RedisOnlineStore
    from tests.serving_helpers import AS_OF

    store = RedisOnlineStore(service.settings.serving.redis_url.get_secret_value(), f"{service.prefix}:fs")
    try:
        return store.read([cid], now=AS_OF).customers[0].values
    finally:
        store.close()


def test_rate_limit_1001st_request_in_a_minute_gets_429(service: Service) -> None:
    # An id no other test sends (unknown to the store: a per-item error, still 200): its moving window is empty.
    body = orjson.dumps({"customer_ids": [424_242]})
    headers = {"content-type": "application/json"}
    codes = []
    with service.client() as client:
        start = time.monotonic()
        for _ in range(1_001):
            codes.append(client.post("/predict", content=body, headers=headers).status_code)
        elapsed = time.monotonic() - start
        other = client.post("/predict", json={"customer_ids": [424_243]})
        last = client.post("/predict", content=body, headers=headers)
    assert elapsed < 60, "1,001 requests must fit in the one-minute window"
    assert codes[:1_000] == [200] * 1_000  # a moving window: exactly the 1,001st is refused
    assert codes[1_000] == 429
    assert last.status_code == 429 and 1 <= int(last.headers["retry-after"]) <= 60
    assert "rate limit 1000/minute" in last.json()["error"]
    assert other.status_code == 200  # the limit is per customer


def test_breaker_trips_when_the_feature_store_stops_answering_and_recovers(service: Service) -> None:
    with service.client() as client:
        service.proxy.stop()
        try:
            # Ids never asked before: not in the service's feature cache, so every request reads the store.
            # The breaker opens on the error RATE over its window, which may still hold earlier tests'
            # successes: fail until it opens (bounded), every failure a 503.
            replies = []
            for i in range(400):
                replies.append(client.post("/predict", json={"customer_ids": [20_000 + i]}))
                if "circuit is open" in replies[-1].text:
                    break
            assert {r.status_code for r in replies} == {503}
            assert "circuit is open" in replies[-1].text, f"{len(replies)} failed reads did not open it"
            metrics = client.get("/metrics").text
            assert "churn_breaker_state 2.0" in metrics
            open_reply = client.post("/predict", json={"customer_ids": [20_500]})
            assert open_reply.status_code == 503 and "circuit is open" in open_reply.text
            assert client.get("/ready").status_code == 503
            features = {"customer_id": 351, **_features_of(service, 351)}
            assert client.post("/predict_features", json={"rows": [features]}).status_code == 200
        finally:
            service.proxy.start()
        time.sleep(2.2)  # breaker_reset_seconds = 2 in the fixture
        recovered = client.post("/predict", json={"customer_ids": [20_600]})
        assert recovered.status_code == 200, recovered.text  # the store answered (unknown id: per-item error)
        assert "unknown customer_id" in recovered.json()["predictions"][0]["error"]
        assert client.get("/ready").status_code == 200
        assert "churn_breaker_state 0.0" in client.get("/metrics").text


def test_metrics_have_latency_by_version_and_variant(service: Service) -> None:
    with service.client() as client:
        client.post("/predict", json={"customer_ids": [5]})
        text = client.get("/metrics").text
    assert "churn_request_seconds_bucket" in text
    assert f'model_version="{service.previous}"' in text and 'variant="champion"' in text
    assert "churn_rate_limited" in text and "churn_errors" in text


def test_predict_endpoints_bypass_bentomls_middlewares_and_other_requests_do_not(service: Service) -> None:
    """POST /predict and /predict_features go from the HTTP server straight to their handlers: BentoML's
    request metrics never see them, the service's own do; other methods on those paths and every other
    endpoint still take BentoML's stack (a GET /predict is BentoML's router -> the mounted app's 405)."""
    with service.client() as client:
        assert client.post("/predict", json={"customer_ids": [7]}).status_code == 200
        wrong_method = client.get("/predict")
        assert client.get("/ready").status_code == 200
        text = client.get("/metrics").text
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    bentoml_requests = set()  # (endpoint, status) of the requests BentoML's middleware counted
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_total{"):
            labels = dict(p.split("=", 1) for p in line[line.index("{") + 1 : line.index("}")].split(","))
            bentoml_requests.add((labels["endpoint"].strip('"'), labels["http_response_code"].strip('"')))
    assert ("/ready", "200") in bentoml_requests and ("/predict", "405") in bentoml_requests
    assert {s for e, s in bentoml_requests if e in ("/predict", "/predict_features")} == {"405"}  # no POST
    assert 'churn_request_seconds_count{endpoint="predict"' in text
    assert 'churn_requests_in_progress{endpoint="predict"} 0.0' in text


def test_prediction_log_count_sent_equals_stored_across_a_service_restart(service: Service) -> None:
    from tests.serving.conftest import stop_service, wait_ready

    _set_phase(service, "none")  # no shadow rows: one logged row per returned prediction
    features = _features_of(service, 11)
    sent = 0

    def send(first_id: int, requests: int) -> None:
        nonlocal sent
        with service.client() as client:
            for k in range(requests):
                rows = [{**features, "customer_id": first_id + 5 * k + j} for j in range(5)]
                r = client.post("/predict_features", json={"rows": rows})
                assert r.status_code == 200, r.text
                sent += sum("variant" in i for i in r.json()["predictions"])

    def stored() -> int:
        log = read_predictions(service.settings)
        served = log.filter(pl.col("customer_id").is_between(50_000, 59_999))
        return served.filter(pl.col("variant") != "shadow").height  # the rows of returned predictions

    send(50_000, 40)
    stop_service(service.process)  # SIGTERM: the shutdown hook flushes the log
    assert stored() == sent == 200
    # Back up with `churnops serve` (from source: no bento built in this home); its log keeps counting.
    port = int(service.url.rsplit(":", 1)[1])
    service.process = _churnops_serve(service, port)
    wait_ready(service.url, service.process, service.settings.home / f"churnops-serve-{port}.log")
    send(51_000, 10)
    deadline = time.monotonic() + 10  # flushed within prediction_log_flush_seconds (0.5 s here)
    while stored() < sent and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored() == sent == 250
    _set_phase(service, "shadow")


def _churnops_serve(service: Service, port: int):  # type: ignore[no-untyped-def]
    import subprocess

    from tests.serving.conftest import CHURNOPS

    log = open(service.settings.home / f"churnops-serve-{port}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [str(CHURNOPS), "serve", "--port", str(port)],
        env=service.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/predict"), ("POST", "/predict_features"), ("GET", "/rollout")]
)
def test_api_key_guards_predict_and_admin_endpoints(service: Service, method: str, path: str) -> None:
    body = {
        "/predict": {"customer_ids": [3]},
        "/predict_features": {"rows": [{"customer_id": 3, **_features_of(service, 3)}]},
        "/rollout": None,
    }[path]
    with httpx.Client(base_url=service.url, timeout=10) as bare:
        missing = bare.request(method, path, json=body)
        wrong = bare.request(method, path, json=body, headers={"x-api-key": service.api_key + "x"})
        right = bare.request(method, path, json=body, headers={"x-api-key": service.api_key})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200), right.text
    assert "x-api-key" in missing.json()["error"] and "x-api-key" in wrong.json()["error"]
    assert (
        missing.headers["www-authenticate"]
        == wrong.headers["www-authenticate"]
        == 'ApiKey header="x-api-key"'
    )
    if path == "/rollout":
        assert right.json()["stable_version"] == service.previous
    else:
        assert right.json()["predictions"][0]["customer_id"] == 3


def test_docs_pages_show_the_mounted_endpoints_without_a_key(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as bare:  # docs, readiness, metrics are public
        docs = bare.get("/docs")
        asset = bare.get("/docs/static/swagger-ui-bundle.js")
        spec = bare.get("/openapi.json").json()
        index = bare.get("/")  # BentoML's docs page: Swagger UI of /docs.json
        initializer = bare.get("/static_content/swagger-initializer.js")
        bento_spec = bare.get("/docs.json").json()
        public = [bare.get(p).status_code for p in ("/ready", "/metrics", "/livez")]
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text and 'url: "openapi.json"' in docs.text
    assert "https://" not in docs.text  # Swagger UI from bentoml's own static files: no network
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert public == [200, 200, 200]
    schemas = spec["components"]["schemas"]
    for path, model, field in [
        ("/predict", "PredictRequest", "customer_ids"),
        ("/predict_features", "PredictFeaturesRequest", "rows"),
    ]:
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert field in schemas[model]["properties"]
        assert spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PredictResponse"
        }
    assert schemas["FeatureRow"]["properties"]["tenure_days"]["description"]
    assert index.status_code == 200 and "swagger-initializer.js" in index.text
    assert 'url: "./docs.json"' in initializer.text
    assert {"/predict", "/predict_features", "/livez", "/readyz", "/metrics"} <= set(bento_spec["paths"])
    assert "PredictRequest" in bento_spec["components"]["schemas"]
