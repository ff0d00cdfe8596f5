"""Live traffic of a production week: which customers call, and a bounded replayer that sends their
scoring requests over HTTP to the running service.

Who calls (:func:`callers`): the customers of the week's feature snapshot who logged in during the last
7 days or contacted support during the last 30 days (the moments a real system would score them: an app
session, a support call), shuffled with a seed of the week. The service scores them with online features,
rollout routing and shadow scoring, and logs each prediction (``source="http"``); batch scoring then
covers the customers the service did not score (``source="batch"``).

:func:`replay` sends ``POST /predict {"customer_ids": [...]}`` requests at ``traffic.requests_per_second``
(each request has its own start time on a fixed schedule, at most ``traffic.concurrency`` in flight), to a
loopback address only, and stops after ``traffic.max_requests`` requests or ``traffic.max_seconds``,
whichever comes first (requests still waiting for a free slot then are not sent: ``not_sent``; sent ones
still unanswered count as ``unfinished`` errors). :class:`TrafficSummary` holds what the client saw:
requests sent, errors by status, achieved rate, client-side latency P50/P95/P99 and the variants / versions that answered.

:func:`live_week` is a production week's whole step (``production/live_traffic``): move the service's
live clock to the week's snapshot, wait (bounded by ``traffic.model_load_timeout_seconds``) until the
service has loaded the versions its rollout state names (:func:`await_rollout_models`: a version promoted
in the last retraining loads in the background; the week's latencies then measure the models, not the
load -- the swap itself is measured under traffic in tests/serving/test_live_traffic.py), pick the
callers, replay, and wait until the service has flushed their
predictions to the log (so batch scoring can leave those customers out). Around the replay it reads the
service's ``/metrics`` twice (``serving.service_metrics``): the week's requests, error rate, latency
percentiles per variant and version, and uptime as the service counted them (``TrafficSummary.service``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import polars as pl

from churn_assets.serving.service_metrics import scrape, service_window
from churn_assets.settings import Settings

CALLER_RULE = "login_count_last_7d > 0 or support_tickets_last_30d > 0"


class TrafficError(RuntimeError):
    """The replay cannot run as configured (the message says why)."""


def live_url(settings: Settings) -> str:
    """``traffic.url`` or the loopback address of ``churnops serve`` (``serving.port``)."""
    return settings.traffic.url or f"http://127.0.0.1:{settings.serving.port}"


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not host.startswith("127.") and host != "::1":
        raise TrafficError(f"traffic replay sends to loopback addresses only, not {host!r} ({url})")


def callers(features: pl.DataFrame, seed: int) -> list[int]:
    """Customer ids of a feature snapshot who call this week (:data:`CALLER_RULE`), in a seeded order."""
    needed = {"customer_id", "login_count_last_7d", "support_tickets_last_30d"}
    missing = needed - set(features.columns)
    if missing:
        raise TrafficError(f"feature snapshot lacks {sorted(missing)} (needed to pick the callers)")
    ids = (
        features.filter(
            (pl.col("login_count_last_7d").fill_null(0) > 0)
            | (pl.col("support_tickets_last_30d").fill_null(0) > 0)
        )
        .get_column("customer_id")
        .to_numpy()
        .astype(np.int64)
    )
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(ids)]


@dataclass
class TrafficSummary:
    """What the replay client saw in one run."""

    url: str
    requests: int = 0
    customers: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    requests_per_second: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    by_variant: dict[str, int] = field(default_factory=dict)  # "variant vVERSION" -> scored customers
    scored_ids: list[int] = field(default_factory=list)
    not_sent: int = 0  # scheduled but still waiting for a free slot when max_seconds ran out
    stopped_by: str = "max_requests"
    # The service's own count of the window, from its /metrics (serving.service_metrics.service_window);
    # None when it was not read (a plain replay) or did not answer.
    service: dict[str, Any] | None = None

    def as_dict(self, with_ids: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_ids:
            data.pop("scored_ids")
        return data


def _headers(settings: Settings) -> dict[str, str]:
    key = settings.serving.api_key
    return {"x-api-key": key.get_secret_value()} if key is not None else {}


def await_rollout_models(settings: Settings, url: str, timeout: float) -> tuple[float, list[str] | None]:
    """Wait until the service's ``GET /rollout`` reports loaded every version its rollout state names
    (the stable one, and the candidate while a rollout is active), at most ``timeout`` seconds; with
    several workers, until ``serving.workers`` answers in a row say so. Returns the seconds waited and
    the versions loaded at the end (None when ``/rollout`` did not answer 200: the wait is skipped)."""
    started = time.monotonic()
    deadline = started + timeout
    in_a_row, loaded = 0, None
    while True:
        try:
            answer = httpx.get(f"{url}/rollout", headers=_headers(settings), timeout=1.0)
        except httpx.HTTPError:
            answer = None
        if answer is None or answer.status_code != 200:
            return time.monotonic() - started, None
        body = answer.json()
        loaded = [str(v) for v in body.get("loaded_versions") or []]
        wanted = {body.get("stable_version")}
        if body.get("phase") not in ("none", "full") and body.get("candidate_version"):
            wanted.add(body["candidate_version"])
        in_a_row = in_a_row + 1 if {str(v) for v in wanted if v is not None} <= set(loaded) else 0
        if in_a_row >= settings.serving.workers or time.monotonic() >= deadline:
            return time.monotonic() - started, loaded
        time.sleep(0.2)


def service_ready(settings: Settings, url: str | None = None, timeout: float | None = None) -> bool:
    """True when the service at ``url`` (default :func:`live_url`) answers ``/ready`` with 200 within
    ``timeout`` (default ``traffic.ready_timeout_seconds``)."""
    url = url or live_url(settings)
    _check_loopback(url)
    deadline = time.monotonic() + (timeout if timeout is not None else settings.traffic.ready_timeout_seconds)
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


async def _replay(
    url: str,
    batches: Sequence[Sequence[int]],
    settings: Settings,
    rate: float,
    max_seconds: float,
) -> TrafficSummary:
    cfg = settings.traffic
    summary = TrafficSummary(url)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    scored: list[int] = []
    in_flight: list[int] = []
    gate = asyncio.Semaphore(cfg.concurrency)
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    started = time.perf_counter()
    deadline = started + max_seconds

    async with httpx.AsyncClient(
        base_url=url, timeout=cfg.request_timeout_seconds, headers=_headers(settings), limits=limits
    ) as client:

        async def one(ids: Sequence[int]) -> None:
            async with gate:
                if time.perf_counter() >= deadline:
                    return  # max_seconds ran out while it waited for a slot: not sent
                in_flight.append(1)  # sent: counts as a request from here on
                sent = time.perf_counter()
                try:
                    response = await client.post("/predict", json={"customer_ids": list(ids)})
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    return
                latencies.append((time.perf_counter() - sent) * 1000)
                statuses[str(response.status_code)] += 1
                if response.status_code != 200:
                    return
                for item in response.json().get("predictions", []):
                    if "probability" in item:
                        variants[f"{item['variant']} v{item['model_version']}"] += 1
                        scored.append(int(item["customer_id"]))

        tasks = []
        for i, ids in enumerate(batches):
            due = started + i / rate
            if due >= deadline:
                summary.stopped_by = "max_seconds"
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(ids)))
        if tasks:
            await asyncio.wait(
                tasks, timeout=max(0.1, deadline - time.perf_counter()) + cfg.request_timeout_seconds
            )
        for task in tasks:
            task.cancel()

    summary.seconds = time.perf_counter() - started
    summary.requests = len(in_flight)
    summary.not_sent = len(tasks) - len(in_flight)
    if summary.not_sent:
        summary.stopped_by = "max_seconds"
    summary.ok = statuses.get("200", 0)
    summary.errors = summary.requests - summary.ok
    unfinished = summary.requests - sum(statuses.values())  # sent, unanswered when the time ran out
    if unfinished:
        statuses["unfinished"] += unfinished
    summary.errors_by_status = {k: v for k, v in statuses.items() if k != "200"}
    summary.requests_per_second = summary.requests / summary.seconds if summary.seconds > 0 else 0.0
    if latencies:
        p50, p95, p99 = np.percentile(np.asarray(latencies), [50, 95, 99])
        summary.latency_p50_ms, summary.latency_p95_ms, summary.latency_p99_ms = (
            float(p50),
            float(p95),
            float(p99),
        )
    summary.by_variant = dict(variants)
    summary.scored_ids = scored
    summary.customers = len(scored)
    return summary


def replay(
    settings: Settings,
    customer_ids: Sequence[int],
    *,
    url: str | None = None,
    rate: float | None = None,
    max_requests: int | None = None,
    max_seconds: float | None = None,
) -> TrafficSummary:
    """Send the scoring requests of ``customer_ids`` (``traffic.customers_per_request`` per request) to the
    live service; bounded by ``max_requests`` / ``max_seconds`` (defaults from ``settings.traffic``)."""
    cfg = settings.traffic
    url = url or live_url(settings)
    _check_loopback(url)
    size = cfg.customers_per_request
    limit = max_requests if max_requests is not None else cfg.max_requests
    batches = [list(customer_ids[i : i + size]) for i in range(0, len(customer_ids), size)][:limit]
    summary = asyncio.run(
        _replay(
            url,
            batches,
            settings,
            rate if rate is not None else cfg.requests_per_second,
            max_seconds if max_seconds is not None else cfg.max_seconds,
        )
    )
    if summary.stopped_by != "max_seconds" and len(batches) * size < len(customer_ids):
        summary.stopped_by = "max_requests"
    elif summary.stopped_by != "max_seconds":
        summary.stopped_by = "all callers"
    return summary


@dataclass(frozen=True)
class LiveWeek:
    """One production week's live traffic: the replay's summary (None when nothing was sent), the number
    of callers, the prediction-log rows the service flushed for them, and one line saying what happened."""

    summary: TrafficSummary | None
    callers: int
    logged_rows: int
    note: str
    model_load_wait_seconds: float = 0.0


def summaries_dir(settings: Settings) -> Path:
    """Where :func:`live_week` keeps each week's client-side summary (``{as_of}.json``)."""
    return settings.serving_dir / "live_traffic"


def _logged_live_rows(settings: Settings, as_of: dt.date) -> int:
    from churn_assets.serving.prediction_log import read_snapshots

    rows = read_snapshots(settings, [as_of])
    return rows.filter((pl.col("source") == "http") & (pl.col("variant") != "shadow")).height


def live_week(settings: Settings, features: pl.DataFrame, as_of: dt.date, seed: int) -> LiveWeek:
    """Replay the week of snapshot ``as_of`` against the live service (see module docstring)."""
    from churn_assets.serving.live_clock import set_live_clock

    if not settings.traffic.enabled:
        return LiveWeek(None, 0, 0, "traffic.enabled is false: batch scoring only")
    url = live_url(settings)
    if not service_ready(settings, url):
        return LiveWeek(None, 0, 0, f"no live service answers {url}/ready: batch scoring only")
    set_live_clock(settings, as_of)
    # A version the rollout state names but the service has not loaded yet (promoted by the last
    # retraining) is loading in the background since the /ready probe above: wait for it, bounded.
    waited, loaded = await_rollout_models(settings, url, settings.traffic.model_load_timeout_seconds)
    # Every worker checks the clock file on its first feature read after this long.
    time.sleep(max(settings.serving.live_clock_refresh_seconds + 0.2 - waited, 0.0))
    ids = callers(features, seed)
    before = _logged_live_rows(settings, as_of)
    metrics_before = scrape(url)
    summary = replay(settings, ids)
    # The service flushes its prediction log every prediction_log_flush_seconds (and on shutdown).
    deadline = time.monotonic() + 3 * settings.serving.prediction_log_flush_seconds + 5.0
    logged = _logged_live_rows(settings, as_of) - before
    while logged < summary.customers and time.monotonic() < deadline:
        time.sleep(0.25)
        logged = _logged_live_rows(settings, as_of) - before
    metrics_after = scrape(url)
    summary.service = service_window(metrics_before, metrics_after) if metrics_after is not None else None
    note = (
        f"{summary.requests:,} requests from {len(ids):,} callers ({summary.stopped_by}) at "
        f"{summary.requests_per_second:.0f}/s, {summary.errors} errors, P95 "
        f"{summary.latency_p95_ms if summary.latency_p95_ms is None else round(summary.latency_p95_ms, 1)} ms"
    )
    if waited >= 0.5:
        note += f"; waited {waited:.1f} s for the service to load v{', v'.join(loaded or [])}"
    if summary.service is not None:
        rate = summary.service["error_rate"]
        note += (
            f"; the service counted {summary.service['requests']:,} requests, error rate "
            f"{'-' if rate is None else f'{rate:.2%}'}, P95 {summary.service['latency_p95_ms']} ms"
        )
    summaries_dir(settings).mkdir(parents=True, exist_ok=True)
    (summaries_dir(settings) / f"{as_of.isoformat()}.json").write_text(
        json.dumps(summary.as_dict(), indent=1)
    )
    return LiveWeek(summary, len(ids), logged, note, round(waited, 1))
