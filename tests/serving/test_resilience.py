"""Unit tests of the resilience parts: moving-window rate limit (memory and the real Redis) and the deadline."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from churn_assets.serving.resilience import CustomerRateLimit, Deadline, RequestTimedOut
from churn_assets.settings import ServingSettings, Settings


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_rate_limit_is_a_moving_window_no_burst_across_a_window_boundary(
    storage: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"churnops-test:{uuid.uuid4().hex[:12]}"
    serving = ServingSettings(  # type: ignore[call-arg]
        rate_limit="10/second", rate_limit_storage=storage, redis_url=redis_url, redis_key_prefix=prefix
    )
    limiter = CustomerRateLimit(Settings(home=tmp_path, serving=serving))
    assert limiter.backend == storage
    try:
        start = time.monotonic()
        assert [limiter.hit(7) for _ in range(5)] == [None] * 5
        time.sleep(0.7)
        assert [limiter.hit(7) for _ in range(5)] == [None] * 5  # 10 within the second
        assert limiter.hit(7) is not None
        time.sleep(max(0.0, 1.15 - (time.monotonic() - start)))
        # A fixed window starting at the first hit would reset at t = 1 s and let 10 more through; the moving
        # window still holds the 5 hits of t = 0.7 s: 5 more pass, the 6th waits for them to expire.
        results = [limiter.hit(7) for _ in range(6)]
        assert time.monotonic() - start < 1.65, "the box was too slow for the timing of this test"
        assert results[:5] == [None] * 5
        assert results[5] is not None and results[5] >= 1.0  # Retry-After, whole seconds at least 1
        assert limiter.hit(8) is None  # per customer
    finally:
        if storage == "redis":
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(match=f"{prefix}:*"):
                client.delete(key)


def test_deadline_stops_work_at_the_next_stage_after_expiry() -> None:
    now = [0.0]
    deadline = Deadline(1.0, clock=lambda: now[0])
    deadline.enter("feature_store")
    assert deadline.remaining() == 1.0
    now[0] = 0.5
    deadline.enter("scoring")
    now[0] = 1.0
    with pytest.raises(RequestTimedOut, match=r"exceeded 1 s \(stage: commit\)"):
        deadline.commit()
    assert deadline.stage == "scoring" and deadline.remaining() == 0.0
    assert deadline.expire()  # nothing committed: the waiter answers 504


def test_deadline_expired_by_the_waiter_stops_the_work_even_before_the_clock() -> None:
    deadline = Deadline(60.0)
    deadline.enter("feature_store")
    assert deadline.expire()
    with pytest.raises(RequestTimedOut) as info:
        deadline.enter("scoring")
    assert info.value.stage == "scoring"


def test_deadline_committed_work_is_awaited_not_abandoned() -> None:
    deadline = Deadline(60.0)
    deadline.enter("scoring")
    deadline.commit()
    assert deadline.expire() is False  # the log write is under way: its answer is owed


def test_deadline_commit_and_expire_race_has_one_winner() -> None:
    for _ in range(200):
        deadline = Deadline(60.0)
        outcome: dict[str, object] = {}

        def work(d: Deadline = deadline, out: dict[str, object] = outcome) -> None:
            try:
                d.commit()
                out["committed"] = True
            except RequestTimedOut:
                out["committed"] = False

        thread = threading.Thread(target=work)
        thread.start()
        abandoned = deadline.expire()
        thread.join()
        assert outcome["committed"] is not abandoned
