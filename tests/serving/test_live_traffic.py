"""Live traffic against the real service (``bentoml serve`` from source, tests/serving/conftest.py): the
bounded replayer, and a model swap without a failed request at 300 requests/s.

The swap: while the replayer sends 300 requests/s, a newly registered version (v3, exported to the
service's BentoML model store as a promotion's bento build does) becomes the rollout candidate at 50 %
with v2 as stable. The running service loads v3 in the background (serving.runtime) and routes to it from
then on: every request succeeds and answers come from v3 after the swap.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import polars as pl
import pytest
from pydantic import SecretStr

from churn_assets.serving.bento_build import export_version
from churn_assets.serving.rollout import RolloutState, RolloutStore
from churn_assets.serving.traffic import CALLER_RULE, TrafficError, TrafficSummary, callers, replay
from churn_assets.settings import Settings, TrafficSettings
from tests.serving.conftest import N_CUSTOMERS, Service
from tests.serving_helpers import feature_frame, register, train_model

pytestmark = pytest.mark.timeout(300)


def live_settings(service: Service, **traffic: object) -> Settings:
    """The service's settings with its API key and the replay aimed at it (a generous client timeout: the
    tests count failed requests, and a shared box can be slow)."""
    traffic = {"request_timeout_seconds": 30.0, **traffic}
    serving = service.settings.serving.model_copy(update={"api_key": SecretStr(service.api_key)})
    return service.settings.model_copy(
        update={"serving": serving, "traffic": TrafficSettings(url=service.url, **traffic)}  # type: ignore[arg-type]
    )


def test_callers_are_the_active_customers_in_a_seeded_order() -> None:
    snapshot = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 5],
            "login_count_last_7d": [0, 3, 0, None, 1],
            "support_tickets_last_30d": [0, 0, 2, 0, None],
        }
    )
    picked = callers(snapshot, seed=7)
    assert sorted(picked) == [2, 3, 5], CALLER_RULE
    assert picked == callers(snapshot, seed=7)
    with pytest.raises(TrafficError, match="support_tickets_last_30d"):
        callers(snapshot.drop("support_tickets_last_30d"), seed=7)


def test_replay_is_loopback_only_and_bounded(service: Service) -> None:
    with pytest.raises(ValueError, match="loopback"):
        TrafficSettings(url="http://10.1.2.3:3000")
    settings = live_settings(service, requests_per_second=200.0, customers_per_request=2)
    with pytest.raises(TrafficError, match="loopback"):
        replay(settings, [1, 2], url="http://192.0.2.1:3000")
    ids = list(range(1, 101))
    summary = replay(settings, ids, max_requests=20)
    assert (summary.requests, summary.ok, summary.errors) == (20, 20, 0)
    assert summary.customers == 40 and set(summary.scored_ids) == set(ids[:40])
    assert summary.stopped_by == "max_requests"
    assert summary.latency_p50_ms is not None and summary.latency_p99_ms is not None
    assert summary.latency_p50_ms <= summary.latency_p99_ms
    # max_seconds stops the schedule: what is due later, or still waits for a slot, is not sent, and is no
    # error. The schedule (100 requests at 100/s) lasts 1 s whatever the service's speed, the bound 0.3 s.
    slow = replay(live_settings(service, concurrency=1), ids, rate=100.0, max_seconds=0.3)
    assert slow.stopped_by == "max_seconds"
    assert 0 < slow.requests + slow.not_sent < len(ids) and slow.errors == 0, slow.errors_by_status
    # Unknown customers are per-item errors in a 200 response, not scored ones.
    unknown = replay(settings, [N_CUSTOMERS + 10_000])
    assert unknown.ok == 1 and unknown.customers == 0


def test_model_swap_at_300_requests_per_second_drops_no_request(service: Service) -> None:
    settings = live_settings(service, concurrency=32)
    v3 = register(service.settings, train_model(feature_frame(range(1, 601)), 3), threshold=0.45, auc=0.95)
    export_version(service.settings, v3)  # what the promotion's bento build does
    store = RolloutStore(service.settings)
    before = store.load()
    ids = [1 + (i % N_CUSTOMERS) for i in range(2_400)]  # 8 s at 300 requests/s
    result: dict[str, TrafficSummary] = {}
    sender = threading.Thread(
        target=lambda: result.setdefault(
            # 8 s on a quiet box; the time bound leaves room for a loaded one (all 2,400 must be sent)
            "summary",
            replay(settings, ids, rate=300.0, max_requests=len(ids), max_seconds=100.0),
        )
    )
    sender.start()
    try:
        time.sleep(2.0)  # traffic flowing on v1 / v2
        store.save(
            RolloutState(phase="canary_50", stable_version=before.candidate_version, candidate_version=v3)
        )
        sender.join(timeout=120)
    finally:
        store.save(before)
    summary = result["summary"]
    assert summary.requests == len(ids)
    assert summary.errors == 0 and summary.errors_by_status == {}, summary.errors_by_status
    assert summary.by_variant.get(f"canary v{v3}", 0) > 0, summary.by_variant  # the new version serves
    assert summary.by_variant.get(f"champion v{before.candidate_version}", 0) > 0, summary.by_variant
    print(
        f"swap under load: {summary.requests} requests at {summary.requests_per_second:.0f}/s, "
        f"{summary.errors} failed, P99 {summary.latency_p99_ms:.1f} ms, {summary.by_variant}"
    )


def test_live_week_sends_the_callers_and_waits_for_their_logged_predictions(service: Service) -> None:
    from churn_assets.serving.prediction_log import read_snapshots
    from churn_assets.serving.traffic import live_week

    settings = live_settings(service, enabled=True, requests_per_second=100.0, max_requests=60)
    as_of = dt.date.fromisoformat(service.env["CHURNOPS_SERVING__AS_OF"])  # the service's fixed clock
    ids = list(range(1, 201))
    snapshot = pl.DataFrame(
        {
            "customer_id": ids,
            "login_count_last_7d": [i % 3 for i in ids],  # two in three log in
            "support_tickets_last_30d": [0] * len(ids),
        }
    )
    week = live_week(settings, snapshot, as_of, seed=1)
    assert week.summary is not None and week.callers == sum(1 for i in ids if i % 3)
    assert (week.summary.requests, week.summary.errors) == (60, 0)
    assert week.logged_rows >= week.summary.customers == 60  # flushed before live_week returned
    logged = read_snapshots(service.settings, [as_of]).filter(pl.col("source") == "http")
    assert set(week.summary.scored_ids) <= set(logged.get_column("customer_id").to_list())
    # The service's own count of the same window (its /metrics before and after the replay).
    counted = week.summary.service
    assert counted is not None and counted["requests"] == 60 and counted["errors"] == 0, counted
    assert counted["error_rate"] == 0.0 and not counted["restarted"]
    assert {k: v["requests"] for k, v in counted["by_variant"].items()} == week.summary.by_variant
    assert 0 < counted["latency_p50_ms"] <= counted["latency_p95_ms"] <= counted["latency_p99_ms"]
    assert counted["uptime_seconds"] > counted["window_seconds"] > 0
    assert "the service counted 60 requests, error rate 0.00%" in week.note
    off = live_week(live_settings(service, enabled=False), snapshot, as_of, seed=1)
    assert off.summary is None and "batch scoring only" in off.note


def test_a_week_waits_for_the_candidate_to_load_so_every_live_request_is_shadow_scored(
    service: Service,
) -> None:
    """A version the rollout names in shadow but the service cannot load yet (not exported: its load fails
    and is retried after ``serving.model_load_retry_seconds``) keeps a bounded wait waiting; once exported,
    the week replays only after the service reports it loaded -- seconds longer than the clock's own
    refresh wait -- so the candidate is judged on every live request, not on those after its load."""
    from churn_assets.serving.prediction_log import read_snapshots
    from churn_assets.serving.traffic import await_rollout_models, live_week

    settings = live_settings(service, enabled=True, requests_per_second=100.0, max_requests=80)
    new = register(service.settings, train_model(feature_frame(range(1, 601)), 5), threshold=0.45, auc=0.95)
    store = RolloutStore(service.settings)
    before = store.load()
    as_of = dt.date.fromisoformat(service.env["CHURNOPS_SERVING__AS_OF"])
    ids = list(range(401, N_CUSTOMERS + 1))  # customers no other test of the shared service logs as shadow
    snapshot = pl.DataFrame(
        {
            "customer_id": ids,
            "login_count_last_7d": [1] * len(ids),
            "support_tickets_last_30d": [0] * len(ids),
        }
    )
    try:
        store.save(RolloutState(phase="shadow", stable_version=before.stable_version, candidate_version=new))
        waited, loaded = await_rollout_models(settings, service.url, timeout=1.0)
        assert waited >= 1.0 and loaded is not None and new not in loaded, (waited, loaded)  # bounded
        export_version(service.settings, new)  # what the promotion's bento build does
        week = live_week(settings, snapshot, as_of, seed=2)
        _, loaded = await_rollout_models(settings, service.url, timeout=0.0)
    finally:
        store.save(before)
    assert loaded is not None and new in loaded and before.stable_version in loaded, loaded
    retry = service.settings.serving.model_load_retry_seconds
    assert retry - 1.5 <= week.model_load_wait_seconds <= retry + 5.0, (
        week.model_load_wait_seconds,
        week.note,
    )
    assert f"waited {week.model_load_wait_seconds:.1f} s for the service to load" in week.note
    assert week.summary is not None and (week.summary.requests, week.summary.errors) == (80, 0)
    shadow = read_snapshots(service.settings, [as_of]).filter(
        (pl.col("source") == "http") & (pl.col("variant") == "shadow") & (pl.col("model_version") == new)
    )
    assert set(shadow.get_column("customer_id").to_list()) == set(week.summary.scored_ids), week.note
    # Without an admin key the service does not say what it loaded: the week does not wait.
    keyless = settings.model_copy(update={"serving": settings.serving.model_copy(update={"api_key": None})})
    assert await_rollout_models(keyless, service.url, timeout=5.0)[1] is None
