"""What one service worker holds and does per request, independent of HTTP: the loaded model versions,
online-feature reads behind the TTL cache and the circuit breaker, rollout routing, scoring, shadow scoring
and the prediction log. :mod:`churn_assets.serving.app` puts HTTP around it; the bento builds it from the
models in its BentoML store.

Model swap without downtime: when the rollout state names a version the worker has not loaded (a new
champion promoted and exported to the BentoML model store while the service runs), a background thread
loads it from the store (``serving.bento_build.model_store``) while the loaded versions keep serving; the
new version takes traffic from the first request after it is in :attr:`Runtime.models` (one atomic
assignment). Versions no longer named by the state (stable, candidate, retained previous) are dropped.
A failed load is logged and retried after ``serving.model_load_retry_seconds``. A loaded version is
scored once (one row and a batch) and frozen out of the collector's sight *before* it is installed, so its
first requests pay no set-up and no collection pause.

Shadow scoring runs on one thread per worker (:class:`ShadowScorer`), after the responses, from a bounded
queue: it never takes a request thread, the shadow latency it logs is the candidate's scoring time (not
time spent waiting for other requests' threads), and when the queue is full the work is dropped and
counted instead of queued without bound.

Clock: the live clock file (:mod:`churn_assets.serving.live_clock`) moves the worker's feature reads and
the ``as_of`` of its prediction-log rows to the week the production run serves (the feature cache is
cleared then).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cachetools

from churn_assets.feature_store.online import OnlineStore, make_online_store
from churn_assets.serving.live_clock import LiveClock, read_live_clock
from churn_assets.serving.prediction_log import PredictionLogWriter
from churn_assets.serving.resilience import (
    CustomerRateLimit,
    Deadline,
    FeatureStoreUnavailable,
    RateBreaker,
    StoreUnavailable,
)
from churn_assets.serving.rollout import RolloutState, RolloutStore, route
from churn_assets.serving.scoring import ScoringModel, feature_hash
from churn_assets.settings import Settings

log = logging.getLogger(__name__)
_UNKNOWN: dict[str, Any] = {}  # cached marker: the store has no row for the customer


ShadowWork = Sequence[tuple[ScoringModel, int | None, Mapping[str, Any]]]


class ShadowScorer:
    """One thread that scores the shadow work of a worker's requests in arrival order, from a queue of at
    most ``capacity`` requests' work. :meth:`submit` never blocks: a full queue drops the work (returns
    False). The thread starts with the first submission in the process that submits (a forked worker
    starts its own)."""

    def __init__(self, score: Callable[[ShadowWork], None], capacity: int) -> None:
        self._score = score
        self._capacity = capacity
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue[ShadowWork | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None

    def _started(self) -> queue.Queue[ShadowWork | None]:
        if self._pid == os.getpid():  # started in this process: no lock on the request path
            return self._queue
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._queue = queue.Queue(self._capacity)
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="shadow-scorer", daemon=True
                )
                self._thread.start()
            return self._queue

    def submit(self, work: ShadowWork) -> bool:
        try:
            self._started().put_nowait(work)
        except queue.Full:
            return False
        return True

    def _run(self, work_queue: queue.Queue[ShadowWork | None]) -> None:
        while (work := work_queue.get()) is not None:
            try:
                self._score(work)
            except Exception:  # one request's shadow work must not stop the others'
                log.exception("shadow scoring of v%s failed", work[0][0].version)
            finally:
                work_queue.task_done()
        work_queue.task_done()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout`` s) until every submitted work is scored and logged; True when it was."""
        with self._lock:
            started = self._pid == os.getpid()
        if not started:
            return True
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued (at most ``timeout`` s), then stop the thread."""
        self.drain(timeout)
        with self._lock:
            thread, started = self._thread, self._pid == os.getpid()
        if started and thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)


def serving_clock(settings: Settings) -> dt.datetime:
    """The clock of online reads: ``serving.as_of``, the live clock file, the newest offline snapshot, or
    else wall-clock UTC."""
    if settings.serving.as_of is not None:
        return dt.datetime.combine(settings.serving.as_of, dt.time())
    live = read_live_clock(settings)
    if live is not None:
        return dt.datetime.combine(live, dt.time())
    try:
        from churn_assets.feature_store.offline import OfflineStore
        from churn_assets.storage.warehouse import Warehouse

        with Warehouse.of(settings).connect() as con:
            times = OfflineStore(con).snapshot_times("customer_account")
        if times:
            return max(times)
    except Exception as exc:  # the warehouse may be absent or locked by a writer
        log.warning("serving clock: offline store unavailable (%s); using wall-clock UTC", exc)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class Scoring:
    """A scored request before it is logged: response ``items`` (scored or per-item errors), the ``shadow``
    work (candidate model, customer id, row) to score after the response, the prediction-log
    ``records`` of the scored items (all under ``request_id``), and the scoring time of each ensemble
    member (``(model version, member, seconds)``)."""

    items: list[dict[str, Any]]
    shadow: list[tuple[ScoringModel, int | None, Mapping[str, Any]]]
    records: list[dict[str, Any]]
    request_id: str = ""  # the prediction log's request_id of the records
    member_seconds: list[tuple[str, str, float]] = field(default_factory=list)


class Runtime:
    """A worker's serving state; ``models`` maps registry version -> loaded model."""

    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, ScoringModel],
        default_version: str,
        store: OnlineStore | None = None,
        writer: PredictionLogWriter | None = None,
    ) -> None:
        if default_version not in models:
            raise ValueError(f"default version {default_version} is not among the loaded {sorted(models)}")
        self.settings = settings
        cfg = settings.serving
        self.models = dict(models)
        self.default_version = default_version
        self.store = store or make_online_store(
            settings,
            read_timeout_seconds=cfg.feature_store_timeout_seconds,
            connect_timeout_seconds=cfg.redis_connect_timeout_seconds,
        )
        self.writer = writer or PredictionLogWriter(settings)
        breaker_args = (
            cfg.breaker_error_rate,
            cfg.breaker_window_seconds,
            cfg.breaker_min_calls,
            cfg.breaker_reset_seconds,
        )
        rollout_breaker = RateBreaker(*breaker_args, name="rollout state store", error=StoreUnavailable)
        self.rollout = RolloutStore(settings, rollout_breaker)
        rollout_breaker.probe = self.rollout.load
        self.rate_limit = CustomerRateLimit(settings)
        # Open: requests get 503 at once; a timer re-reads one id every breaker_reset_seconds to close it.
        self.breaker = RateBreaker(*breaker_args, probe=lambda: self._read_store([0]))
        self._state_unreadable = False
        self.cache: cachetools.TTLCache[int, dict[str, Any]] | None = (
            cachetools.TTLCache(cfg.feature_cache_size, cfg.feature_cache_ttl_seconds)
            if cfg.feature_cache_ttl_seconds > 0
            else None
        )
        self.clock = LiveClock(settings) if cfg.as_of is None else None
        self.now = serving_clock(settings)
        self.as_of = self.now.date()
        # Every model reads the union of their features (one store round trip).
        self.features = sorted({f for m in self.models.values() for f in m.features})
        self._loading: set[str] = set()
        self._load_failed: dict[str, float] = {}  # version -> monotonic time of the failed load
        self._load_lock = threading.Lock()
        self.shadow = ShadowScorer(self.score_shadow, cfg.shadow_queue_size)

    # -- versions ---------------------------------------------------------------------------------
    def state(self) -> RolloutState:
        """The rollout state; when it cannot be read (and none was read before) the default version serves
        all traffic (logged once, and once more when the state is readable again)."""
        try:
            state = self.rollout.current()
        except Exception as exc:  # a broken state file or an unreachable Redis must not take serving down
            if not self._state_unreadable:
                self._state_unreadable = True
                log.warning("rollout state unreadable (%s): serving the default version", exc)
            return RolloutState()
        if self._state_unreadable:
            self._state_unreadable = False
            log.warning("rollout state readable again: phase %s", state.phase)
        named = {state.stable_version, state.candidate_version if state.active else None}
        if any(v is not None and v not in self.models for v in named):
            self._load_missing(state)
        return state

    # -- clock and model swap ---------------------------------------------------------------------
    def _follow_clock(self) -> None:
        try:
            day = self.clock.changed() if self.clock is not None else None
        except ValueError as exc:
            log.warning("live clock unreadable (%s): keeping as_of %s", exc, self.as_of)
            return
        if day is not None and day != self.as_of:
            self.now, self.as_of = dt.datetime.combine(day, dt.time()), day
            if self.cache is not None:
                self.cache.clear()
            log.info("live clock: serving features as of %s", day)

    def _load_missing(self, state: RolloutState) -> None:
        """Start one background load of the versions ``state`` names but this worker has not loaded."""
        now = time.monotonic()
        retry = self.settings.serving.model_load_retry_seconds
        wanted = [
            v
            for v in (state.stable_version, state.candidate_version if state.active else None)
            if v is not None and v not in self.models and now - self._load_failed.get(v, -retry) >= retry
        ]
        with self._load_lock:
            wanted = [v for v in wanted if v not in self._loading]
            if not wanted:
                return
            self._loading.update(wanted)
        threading.Thread(target=self._load_versions, args=(wanted,), name="model-loader", daemon=True).start()

    def _load_versions(self, versions: list[str]) -> None:
        from churn_assets.serving.bento_build import bento_tag_of, load_exported, model_store

        try:
            store = model_store(self.settings)
            loaded: list[ScoringModel] = []
            for version in versions:
                start = time.perf_counter()
                try:
                    model = load_exported(store.get(bento_tag_of(self.settings, version)).path)
                    self.warm_up(model)
                except Exception as exc:
                    self._load_failed[version] = time.monotonic()
                    log.warning("model v%s named by the rollout state could not be loaded: %s", version, exc)
                    continue
                log.info("model v%s loaded and warmed up in %.2f s", version, time.perf_counter() - start)
                loaded.append(model)
            if loaded:
                # As at start-up (bento/service.py): the new version's long-lived objects out of the
                # collector's sight before it takes traffic. No full collection here: its pause would stop
                # every request thread of a long-running worker.
                gc.freeze()
            for model in loaded:
                self.install(model)
        finally:
            with self._load_lock:
                self._loading.difference_update(versions)

    def warm_up(self, model: ScoringModel) -> None:
        """Score one row and a batch with ``model`` before it takes traffic (its one-row predictors and
        first-call set-up happen here, not in its first requests). The rows are cached feature rows when
        there are any, else rows with every feature missing."""
        cached = list(self.cache.values())[:8] if self.cache is not None else []
        rows = [r for r in cached if r] or [{}, {}]
        model.score(rows[:1])
        model.score(rows if len(rows) > 1 else rows * 2)

    def install(self, model: ScoringModel) -> None:
        """Add a loaded version and drop the versions the rollout state no longer names (the new version
        serves from the next request; in-flight requests finish on the models they started with)."""
        try:
            state: RolloutState | None = self.rollout.current()
        except Exception as exc:  # unreadable state: add the model, drop nothing
            log.warning("rollout state unreadable while installing v%s (%s)", model.version, exc)
            state = None
        models = dict(self.models)
        if state is not None:
            keep = {
                state.stable_version,
                state.candidate_version,
                state.retained_version,
                self.default_version,
            }
            models = {v: m for v, m in models.items() if v in keep}
        models[model.version] = model
        if state is not None and state.stable_version in models:
            self.default_version = state.stable_version
        features = sorted({f for m in models.values() for f in m.features})
        if features != self.features:
            self.features = features  # before the new model can be routed to
            if self.cache is not None:
                self.cache.clear()
        self.models = models
        self._load_failed.pop(model.version, None)
        log.info("model v%s loaded: serving versions %s", model.version, sorted(models))

    def model_for(self, version: str | None) -> ScoringModel:
        if version is not None and version in self.models:
            return self.models[version]
        return self.models[self.default_version]

    def candidate(self, state: RolloutState) -> ScoringModel | None:
        if state.active and state.candidate_version in self.models:
            return self.models[state.candidate_version]  # type: ignore[index]
        return None

    # -- features ---------------------------------------------------------------------------------
    def _read_store(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        result = self.store.read(ids, self.features, now=self.now)
        return {c.customer_id: (c.values if c.found else _UNKNOWN) for c in result}

    def features_for(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Feature rows per id (empty dict = unknown id); cache first, then one store read for the rest.

        Raises :class:`FeatureStoreUnavailable` when the breaker is open or the read fails.
        """
        if self.clock is not None:
            self._follow_clock()  # before the read: a new week's features need the new clock
        found: dict[int, dict[str, Any]] = {}
        missing: list[int] = []
        cache = self.cache
        for cid in ids:
            hit = cache.get(cid) if cache is not None else None
            if hit is None:
                missing.append(cid)
            else:
                found[cid] = hit
        if missing:
            fresh = self.breaker.call(self._read_store, list(dict.fromkeys(missing)))
            if cache is not None:
                for cid, values in fresh.items():
                    cache[cid] = values
            found.update(fresh)
        return found

    def ready(self) -> tuple[bool, str]:
        """Model loaded AND the feature store answers (a one-id read through the breaker). Also starts the
        load of a version the rollout state names but this worker lacks (a readiness probe warms it)."""
        self.state()
        if not self.models:
            return False, "no model loaded"
        try:
            self.breaker.call(self._read_store, [0])
        except FeatureStoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

    # -- scoring ----------------------------------------------------------------------------------
    def log(self, scoring: Scoring, deadline: Deadline | None = None) -> None:
        """The point of no return of a request: commit ``deadline`` (raises
        :class:`~churn_assets.serving.resilience.RequestTimedOut` when it has passed or the client went away:
        nothing is logged) and append the scored items to the prediction log.

        Call it after everything that can still fail on the way to the response (serialisation included),
        so that a prediction is logged exactly when it is returned.
        """
        if deadline is not None:
            deadline.commit()
        if scoring.records:
            self.writer.append(scoring.records)

    def score_rows(
        self,
        ids: Sequence[int | None],
        rows: Sequence[Mapping[str, Any] | None],
        explain: bool,
        errors: Mapping[int, str] | None = None,
        deadline: Deadline | None = None,
    ) -> Scoring:
        """Score ``rows`` (None = per-item error in ``errors``): the response items, the shadow work and the
        prediction-log records, with no side effect (:meth:`log` writes the records)."""
        if deadline is not None:
            deadline.enter("scoring")
        start = time.perf_counter()
        state = self.state()
        stable = self.model_for(state.stable_version)
        candidate = self.candidate(state)
        groups: dict[str, list[int]] = {}
        for i, (cid, row) in enumerate(zip(ids, rows, strict=True)):
            if row is None:
                continue
            routed: str = route(cid, state) if (cid is not None and candidate is not None) else "champion"
            groups.setdefault(routed, []).append(i)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        records = []
        member_seconds: list[tuple[str, str, float]] = []
        request_id = uuid.uuid4().hex
        now = dt.datetime.now(dt.UTC)
        for variant, idx in groups.items():
            model = candidate if variant == "canary" and candidate is not None else stable
            batch = [rows[i] for i in idx]
            scored = model.score(batch, explain=explain, top_k=self.settings.serving.explain_top_k)  # type: ignore[arg-type]
            for member, seconds in (scored.member_seconds or {}).items():
                member_seconds.append((model.version, member, seconds))
            for k, i in enumerate(idx):
                item: dict[str, Any] = {
                    "customer_id": ids[i],
                    "probability": float(scored.scores[k]),
                    "label": int(scored.labels[k]),
                    "threshold": model.threshold,
                    "model_name": model.name,
                    "model_version": model.version,
                    "variant": variant,
                }
                if scored.reasons is not None:
                    item["reasons"] = scored.reasons[k]
                out[i] = item
        latency_ms = (time.perf_counter() - start) * 1000
        for done, row in zip(out, rows, strict=True):
            if done is None or row is None:
                continue
            records.append(self._record(request_id, now, done, row, latency_ms))
        shadow = []
        if state.phase == "shadow" and candidate is not None:
            shadow = [(candidate, i, rows[i]) for idx in groups.values() for i in idx]  # type: ignore[misc]
        items = [
            o if o is not None else {"customer_id": ids[i], "error": (errors or {}).get(i, "not scored")}
            for i, o in enumerate(out)
        ]
        shadow_work = [(m, ids[i], r) for m, i, r in shadow]
        return Scoring(items, shadow_work, records, request_id, member_seconds)  # type: ignore[arg-type]

    def _record(
        self,
        request_id: str,
        now: dt.datetime,
        item: Mapping[str, Any],
        row: Mapping[str, Any],
        latency_ms: float,
    ) -> dict[str, Any]:
        return {
            "ts": now,
            "request_id": request_id,
            "customer_id": item["customer_id"] if item["customer_id"] is not None else -1,
            "model_name": item["model_name"],
            "model_version": item["model_version"],
            "variant": item["variant"],
            "score": item["probability"],
            "label": item["label"],
            "threshold": item["threshold"],
            "latency_ms": latency_ms,
            "feature_hash": feature_hash(row, self.features),
            "source": "http",
            "as_of": self.as_of,
        }

    def score_shadow(self, work: Sequence[tuple[ScoringModel, int | None, Mapping[str, Any]]]) -> None:
        """Score the shadow candidate and log it as variant ``shadow`` (on :attr:`shadow`'s thread, after the
        response is sent)."""
        if not work:
            return
        start = time.perf_counter()
        model = work[0][0]
        scored = model.score([row for _, _, row in work])
        latency_ms = (time.perf_counter() - start) * 1000
        now, request_id = dt.datetime.now(dt.UTC), uuid.uuid4().hex
        self.writer.append(
            [
                self._record(
                    request_id,
                    now,
                    {
                        "customer_id": cid,
                        "model_name": model.name,
                        "model_version": model.version,
                        "variant": "shadow",
                        "probability": float(scored.scores[k]),
                        "label": int(scored.labels[k]),
                        "threshold": model.threshold,
                    },
                    row,
                    latency_ms,
                )
                for k, (_, cid, row) in enumerate(work)
            ]
        )

    def close(self) -> None:
        self.shadow.close()  # its queued work is logged before the log is flushed
        self.writer.close()
        self.store.close()
