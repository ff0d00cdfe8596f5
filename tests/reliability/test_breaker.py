"""The breaker every request-path Redis use sits behind (``resilience.RateBreaker``), on plain functions
standing for a store: calls run concurrently, an open breaker refuses at once, its probe closes it when the
store is back (with no traffic), and each state change is logged once. And the rate limiter over its own
``redis-server``, stopped and started again: fail-open or fail-closed per setting, then shared again."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from churn_assets.serving.resilience import (
    CustomerRateLimit,
    FeatureStoreUnavailable,
    RateBreaker,
    RateLimitUnavailable,
)
from churn_assets.settings import ServingSettings, Settings
from tests.reliability.conftest import RedisServer

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


@pytest.mark.parametrize("door", ["blocking", "asyncio"])
@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_rate_limit_degrades_per_setting_when_its_redis_stops_and_recovers_when_it_returns(
    on_failure: str, door: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through either door of the limiter (``hit`` in a thread, ``ahit`` awaited in an event loop): the
    same shared counters, the same breaker, fallback and log lines."""
    server = RedisServer(tmp_path)
    server.start()
    runner = asyncio.Runner()
    try:
        serving = ServingSettings(  # type: ignore[call-arg]
            rate_limit="3/minute",
            rate_limit_storage="redis",
            redis_url=server.url,
            breaker_min_calls=2,
            breaker_reset_seconds=0.3,
            rate_limit_on_store_failure=on_failure,
        )
        limiter = CustomerRateLimit(Settings(home=tmp_path, serving=serving))
        other = limiter.hit if door == "asyncio" else (lambda c: runner.run(limiter.ahit(c)))

        def hit(customer_id: int) -> float | None:
            if door == "asyncio":
                return runner.run(limiter.ahit(customer_id))
            return limiter.hit(customer_id)

        caplog.set_level(logging.WARNING, logger="churn_assets.serving.resilience")
        assert [hit(1) for _ in range(3)] == [None] * 3 and hit(1) is not None  # shared
        assert other(1) is not None  # the other door counts in the same Redis window
        server.stop()
        start = time.monotonic()
        for _ in range(20):
            if on_failure == "open":
                hit(2)  # counted in process: 3 pass, then Retry-After
            else:
                with pytest.raises(RateLimitUnavailable, match="rate limiter unavailable"):
                    hit(2)
        assert time.monotonic() - start < 1.0  # refused connections and an open breaker: no waiting
        assert limiter.degraded and limiter.breaker is not None and limiter.breaker.state == "open"
        if on_failure == "open":
            assert [hit(3) for _ in range(3)] == [None] * 3 and hit(3) is not None
        server.start()  # same data (saved by stop)
        deadline = time.monotonic() + 3
        while limiter.breaker.state != "closed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hit(1) is not None  # the shared window of customer 1 is back
        assert not limiter.degraded
        lines = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("rate limiter degraded") for m in lines) == 1
        assert sum(m.startswith("rate limiter recovered") for m in lines) == 1
    finally:
        runner.close()
        server.close()
