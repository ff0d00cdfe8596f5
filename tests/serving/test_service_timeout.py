"""Request timeout over real HTTP: a second service (1 s timeout, no API key, no feature cache) whose Redis
feature store sits behind a proxy that can hold every answer back (a slow store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import polars as pl
import pytest

from churn_assets.serving.prediction_log import read_predictions
from churn_assets.settings import Settings
from tests.serving.conftest import Service, free_port, start_service, stop_service, wait_ready
from tests.serving_helpers import TcpProxy, proxied_redis_url, redis_port

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]


@dataclass
class SlowService:
    url: str
    proxy: TcpProxy
    settings: Settings  # its prediction log
    api_key: str


@pytest.fixture(scope="module")
def slow_service(service: Service, redis_url: str) -> Iterator[SlowService]:
    proxy = TcpProxy(redis_port(redis_url))
    proxy.start()
    port = free_port()
    log_dir = service.settings.home / f"prediction-log-{port}"
    env = dict(service.env)  # the same API key
    env |= {
        "CHURNOPS_FEATURE_STORE__REDIS_URL": proxied_redis_url(redis_url, proxy),
        "CHURNOPS_SERVING__REQUEST_TIMEOUT_SECONDS": "1",
        "CHURNOPS_SERVING__FEATURE_STORE_TIMEOUT_SECONDS": "10",  # slow reads are not failures here
        "CHURNOPS_SERVING__FEATURE_CACHE_TTL_SECONDS": "0",  # every request reads the store
        "CHURNOPS_SERVING__PREDICTION_LOG_DIR": str(log_dir),
    }
    process = start_service(service.settings, env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, service.settings.home / f"service-{port}.log")
        settings = service.settings.model_copy(
            update={"serving": service.settings.serving.model_copy(update={"prediction_log_dir": log_dir})}
        )
        yield SlowService(f"http://127.0.0.1:{port}", proxy, settings, service.api_key)
    finally:
        stop_service(process)
        proxy.stop()


def _logged(slow: SlowService) -> dict[int, int]:
    log = read_predictions(slow.settings)
    if log.is_empty():
        return {}
    counts = log.filter(pl.col("variant") != "shadow").group_by("customer_id").len()
    return dict(zip(counts["customer_id"].to_list(), counts["len"].to_list(), strict=True))


def test_slow_feature_store_gets_504_at_the_deadline_the_work_stops_and_the_service_stays_healthy(
    slow_service: SlowService,
) -> None:
    headers = {"x-api-key": slow_service.api_key}
    with httpx.Client(base_url=slow_service.url, timeout=10, headers=headers) as client:
        assert client.post("/predict", json={"customer_ids": [5]}).status_code == 200
        slow_service.proxy.delay = 2.5
        start = time.monotonic()
        timed_out = client.post("/predict", json={"customer_ids": [6]})
        elapsed = time.monotonic() - start
        slow_service.proxy.delay = 0.0
        assert timed_out.status_code == 504, timed_out.text
        assert timed_out.json() == {
            "error": "request exceeded 1 s (stage: feature_store)",
            "stage": "feature_store",
        }
        assert elapsed < 2.2, f"504 after {elapsed:.2f} s: it waited for the slow read (2.5 s)"
        # The abandoned thread gets its read at ~2.5 s and stops before scoring: nothing scored or logged.
        stopped = 'churn_timed_out_work_stopped_total{endpoint="predict",stage="scoring"} 1.0'
        deadline = time.monotonic() + 10
        while stopped not in (metrics := client.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stopped in metrics
        assert 'churn_timeouts_total{endpoint="predict",stage="feature_store"} 1.0' in metrics
        # Healthy again once the store answers promptly.
        assert client.get("/ready").status_code == 200
        again = client.post("/predict", json={"customer_ids": [6]})
        assert again.status_code == 200 and again.json()["predictions"][0]["customer_id"] == 6
    deadline = time.monotonic() + 10  # flushed within prediction_log_flush_seconds (0.5 s)
    while _logged(slow_service) != {5: 1, 6: 1} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _logged(slow_service) == {5: 1, 6: 1}  # the timed-out request of customer 6 is not in the log


def test_a_client_gone_before_its_answer_stops_the_work_and_nothing_is_logged(
    slow_service: SlowService,
) -> None:
    """The client disconnects while the feature read is held back; the read then returns within the deadline,
    but the work stops before scoring: the prediction the client never got is not in the log."""
    headers = {"x-api-key": slow_service.api_key}
    with httpx.Client(base_url=slow_service.url, timeout=10, headers=headers) as client:
        assert client.post("/predict", json={"customer_ids": [7]}).status_code == 200
        slow_service.proxy.delay = 0.6  # answers in ~0.6 s, inside the 1 s deadline
        with pytest.raises(httpx.TimeoutException):
            client.post("/predict", json={"customer_ids": [8]}, timeout=0.2)
        time.sleep(1.0)  # the held read returns; the work would score and log customer 8 now
        slow_service.proxy.delay = 0.0
        metrics = client.get("/metrics").text
    assert 'churn_client_disconnects_total{endpoint="predict",stage="feature_store"} 1.0' in metrics
    assert 'churn_timed_out_work_stopped_total{endpoint="predict",stage="scoring"}' in metrics
    deadline = time.monotonic() + 10
    while 7 not in _logged(slow_service) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # one more flush period: a wrongly logged 8 would be flushed by now
    logged = _logged(slow_service)
    assert logged.get(7) == 1 and 8 not in logged
