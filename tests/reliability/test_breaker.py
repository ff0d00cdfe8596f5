"""The breaker every request-path Redis use sits behind (``resilience.RateBreaker``), on plain functions
standing for a store: calls run concurrently, an open breaker refuses at once, its probe closes it when the
store is back (with no traffic), and each state change is logged once."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from churn_assets.serving.resilience import FeatureStoreUnavailable, RateBreaker

pytestmark = pytest.mark.reliability


def test_store_calls_run_concurrently_not_one_after_another() -> None:
    breaker = RateBreaker(0.05, 30, 5, 1.0)
    threads = [threading.Thread(target=breaker.call, args=(time.sleep, 0.3)) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 0.3 * 3  # serialised: 8 x 0.3 s


def test_open_breaker_refuses_at_once_and_its_probe_closes_it_when_the_store_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = threading.Event()

    def store() -> str:
        if not up.is_set():
            raise ConnectionError("refused")
        return "ok"

    breaker = RateBreaker(0.05, 30, 3, 0.3, probe=store)
    caplog.set_level(logging.INFO, logger="churn_assets.serving.resilience")
    for _ in range(3):
        with pytest.raises(FeatureStoreUnavailable, match="feature store failed: ConnectionError: refused"):
            breaker.call(store)
    assert breaker.state == "open"
    refused = []
    for _ in range(200):
        start = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable, match="circuit is open"):
            breaker.call(store)
        refused.append(time.perf_counter() - start)
    assert max(refused) < 0.01
    time.sleep(0.75)  # two probes fail while the store is down (one log line each)
    up.set()
    deadline = time.monotonic() + 2
    while breaker.state != "closed" and time.monotonic() < deadline:  # no call needed: the probe closes it
        time.sleep(0.02)
    assert breaker.state == "closed" and breaker.call(store) == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert sum("opened (closed -> open)" in m for m in lines) == 1
    assert sum("opened (half-open -> open)" in m for m in lines) >= 1
    assert sum("closed (half-open -> closed)" in m for m in lines) == 1
    assert len(lines) <= 2 + 2 * 4  # open, close and one half-open/open pair per probe
