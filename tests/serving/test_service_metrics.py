"""The service's /metrics read back (serving.service_metrics): counts by variant and version, errors, and
latency quantiles interpolated as Prometheus' histogram_quantile does — from a real prometheus_client
registry's text output, with the service's own metric definitions (serving.http_metrics)."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from churn_assets.serving.http_metrics import LATENCY_BUCKETS
from churn_assets.serving.service_metrics import histogram_quantile, parse, service_window


def _registry() -> tuple[CollectorRegistry, Histogram, Counter, Gauge]:
    registry = CollectorRegistry()
    latency = Histogram(
        "churn_request_seconds", "", ["endpoint", "model_version", "variant"], buckets=LATENCY_BUCKETS,
        registry=registry,
    )  # fmt: skip
    errors = Counter("churn_errors", "", ["endpoint", "status"], registry=registry)
    started = Gauge("churn_service_started_timestamp_seconds", "", registry=registry)
    return registry, latency, errors, started


def test_the_window_between_two_scrapes_counts_requests_errors_and_latency_per_variant() -> None:
    registry, latency, errors, started = _registry()
    started.set(time.time() - 3600)
    latency.labels("predict", "1", "champion").observe(0.003)  # before the window
    latency.labels("predict_features", "1", "champion").observe(0.5)  # another endpoint: not counted
    before = parse(generate_latest(registry).decode())
    rng = np.random.default_rng(0)
    champion = rng.uniform(0.0026, 0.0049, 90)  # all inside the (2.5 ms, 5 ms] bucket
    for value in champion:
        latency.labels("predict", "1", "champion").observe(float(value))
    for value in (0.011, 0.015, 0.019):
        latency.labels("predict", "2", "canary").observe(value)
    for _ in range(7):
        latency.labels("predict", "none", "none").observe(0.0005)
        errors.labels("predict", "429").inc()
    errors.labels("predict_features", "500").inc()
    window = service_window(before, parse(generate_latest(registry).decode()))
    assert window["requests"] == 100 and window["errors"] == 7 and window["errors_by_status"] == {"429": 7}
    assert window["error_rate"] == 0.07 and not window["restarted"]
    assert window["by_variant"].keys() == {"champion v1", "canary v2"}
    assert window["by_variant"]["champion v1"]["requests"] == 90
    assert window["by_variant"]["canary v2"]["requests"] == 3
    assert 2.5 < window["latency_p50_ms"] <= 5.0  # the 50th of 100 lies in the champion's bucket
    assert 10.0 < window["by_variant"]["canary v2"]["latency_p95_ms"] <= 20.0
    assert 3599 < window["uptime_seconds"] < 3700


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    inf = float("inf")
    buckets = {0.001: 0.0, 0.002: 10.0, 0.004: 30.0, inf: 30.0}
    assert histogram_quantile(0.5, buckets) == 0.002 + (0.004 - 0.002) * (15 - 10) / 20
    assert histogram_quantile(0.25, buckets) == 0.001 + 0.001 * 7.5 / 10
    assert histogram_quantile(0.99, {0.001: 0.0, inf: 5.0}) == 0.001  # rank in +Inf: highest finite bound
    assert histogram_quantile(0.5, {0.001: 0.0, inf: 0.0}) is None


def test_a_restarted_service_reports_the_second_scrape_alone() -> None:
    registry, latency, _errors, _started = _registry()
    for _ in range(5):
        latency.labels("predict", "1", "champion").observe(0.002)
    before = parse(generate_latest(registry).decode())
    fresh, latency2, _e, _s = _registry()  # counters back at 0, as after a restart
    latency2.labels("predict", "1", "champion").observe(0.002)
    window = service_window(before, parse(generate_latest(fresh).decode()))
    assert window["restarted"] and window["requests"] == 1
