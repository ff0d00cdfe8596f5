"""The endpoints of the HTTP fast path: ``POST /predict``, ``POST /predict_features``, ``GET /rollout``,
``GET /ready`` (see ``serving.app`` for the errors they answer with).

:class:`FastPath` holds what every handler needs (settings, the worker's runtime, the metrics): request
guards (API key, body and batch limits, per-customer rate limit), the deadline around the work, the error
mapping (:meth:`FastPath.endpoint`) and the handlers. :meth:`FastPath.hot_routes` are the predict
endpoints as bare ASGI apps (the service's HTTP server dispatches them past BentoML's middlewares:
``serving.http_server``).

Where the work runs: by default in the thread pool (:meth:`FastPath.in_thread`), waited for until the
deadline or the client's disconnect. With ``serving.inline_max_items`` N > 0, a request whose work cannot
block — at most N customers or rows, every customer's features in the feature cache, no request-time
context — is handled entirely in the event loop (:meth:`FastPath.in_loop`; the rate limit's Redis round
trip is awaited, not blocked on).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from churn_assets.feature_store.request_time import ticket_features
from churn_assets.serving.http_metrics import Metrics
from churn_assets.serving.resilience import (
    BREAKER_STATE_CODE,
    ClientDisconnected,
    Deadline,
    FeatureStoreUnavailable,
    RateLimitUnavailable,
    RequestTimedOut,
    client_disconnected,
)
from churn_assets.serving.runtime import Runtime, Scoring
from churn_assets.serving.schemas import PredictFeaturesRequest, PredictRequest
from churn_assets.settings import LoggingSettings, ServingSettings
from churn_assets.structured_logging import customer_id_hasher

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger(__name__)
request_log = logging.getLogger("churn_assets.serving.requests")
# The outcome named in a request's log line (else ok / rejected / error by status class).
OUTCOMES = {499: "client_disconnected", 504: "timeout", 429: "rate_limited", 503: "unavailable"}
AUTH_CHALLENGE = {"WWW-Authenticate": 'ApiKey header="x-api-key"'}


# Threads of the request work (rate limit, feature read, scoring, log): as many as anyio's default pool, whose
# Queue-and-Condition hand-off and cancel scopes cost more per request than the executor's SimpleQueue.
WORK_THREADS = 40
_POOL: list[ThreadPoolExecutor] = []


def work_pool() -> ThreadPoolExecutor:
    """The process's pool for request work (created on first use, in the worker process)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(WORK_THREADS, thread_name_prefix="fastpath-work"))
    return _POOL[0]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None, background: Any = None
) -> Response:
    return Response(
        orjson.dumps(payload), status, headers=headers, media_type="application/json", background=background
    )


def validation_error(exc: ValidationError) -> Response:
    """422 naming the field, the rule and the message of every validation error."""
    detail = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "rule": e["type"], "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return json_response({"error": "invalid request", "detail": detail}, 422)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def deadline_of(request: Request) -> Deadline:
    deadline: Deadline = request.state.deadline
    return deadline


class FastPath:
    """The fast-path endpoints over ``runtime()`` (the worker's :class:`Runtime`, None until loaded)."""

    def __init__(
        self,
        cfg: ServingSettings,
        runtime: Callable[[], Runtime | None],
        metrics: Metrics,
        logging_cfg: LoggingSettings | None = None,
    ) -> None:
        self.cfg, self.runtime, self.metrics = cfg, runtime, metrics
        logging_cfg = logging_cfg or LoggingSettings()
        self.request_lines = logging_cfg.request_lines  # one log line per predict request
        self.customer_hash = customer_id_hasher(logging_cfg)
        self._watchers: set[asyncio.Task[None]] = set()  # disconnect watchers of requests in flight
        self._predict_endpoints = {
            "/predict": self.endpoint("predict", self.predict),
            "/predict_features": self.endpoint("predict_features", self.predict_features),
        }

    # -- guards ----------------------------------------------------------------------------------
    def current(self) -> Runtime:
        rt = self.runtime()
        if rt is None:
            raise HttpError(503, "model not loaded yet")
        return rt

    async def body_of(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HttpError(413, f"body of {length} bytes exceeds the limit of {limit}")
        deadline = deadline_of(request)
        deadline.enter("read_body")
        try:
            async with asyncio.timeout(deadline.remaining()):
                body = await request.body()
        except TimeoutError:
            raise RequestTimedOut("read_body", deadline.seconds) from None
        if len(body) > limit:
            raise HttpError(413, f"body of {len(body)} bytes exceeds the limit of {limit}")
        return body

    def check_key(self, request: Request, admin: bool = False) -> None:
        """``x-api-key`` (else an ``Authorization: Bearer`` token) against ``serving.api_key`` (constant
        time). Admin endpoints always need it and are disabled (403) without a configured key; predict
        endpoints need it when ``require_api_key``."""
        key = self.cfg.api_key
        if key is None and admin:
            raise HttpError(403, "admin endpoint disabled: serving.api_key is not set")
        if not admin and not self.cfg.require_api_key:
            return
        sent_key = request.headers.get("x-api-key")
        if sent_key is None:  # BentoML's clients send their `token` as a bearer token
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            sent_key = token.strip() if scheme.lower() == "bearer" else ""
        sent = sent_key.encode("latin-1")  # as Starlette decoded it
        if key is None or not hmac.compare_digest(sent, key.get_secret_value().encode()):
            why = "" if key is not None else " (serving.api_key is not set: no key is accepted)"
            raise HttpError(401, f"missing or wrong x-api-key header{why}", AUTH_CHALLENGE)

    def check_content_type(self, request: Request) -> None:
        """Bodies are JSON: any other (or no) media type gets 415."""
        sent = request.headers.get("content-type", "")
        if sent.partition(";")[0].strip().lower() != "application/json":
            raise HttpError(
                415,
                f"content-type {sent or '(none)'!r} is not supported: send application/json",
                {"Accept-Post": "application/json"},
            )

    def check_batch(self, n: int, what: str) -> None:
        if n > self.cfg.max_batch_size:
            raise HttpError(413, f"{n} {what} exceed max_batch_size {self.cfg.max_batch_size}")

    def limit(self, rt: Runtime, ids: list[int]) -> None:
        """The per-customer rate limit of ``ids`` (blocking: in a worker thread)."""
        for cid in dict.fromkeys(ids):
            try:
                retry = rt.rate_limit.hit(cid)
            except RateLimitUnavailable as exc:  # rate_limit_on_store_failure = closed
                raise self.limiter_unavailable(exc) from None
            finally:
                self.metrics.rate_limit_degraded.set(int(rt.rate_limit.degraded))
            if retry is not None:
                raise self.limited(cid, retry)

    async def alimit(self, rt: Runtime, ids: list[int], deadline: Deadline) -> None:
        """:meth:`limit` awaited in the event loop (stage ``rate_limit``, bounded by ``deadline``)."""
        deadline.enter("rate_limit")
        try:
            async with asyncio.timeout(deadline.remaining()):
                for cid in dict.fromkeys(ids):
                    try:
                        retry = await rt.rate_limit.ahit(cid)
                    except RateLimitUnavailable as exc:  # rate_limit_on_store_failure = closed
                        raise self.limiter_unavailable(exc) from None
                    finally:
                        self.metrics.rate_limit_degraded.set(int(rt.rate_limit.degraded))
                    if retry is not None:
                        raise self.limited(cid, retry)
        except TimeoutError:
            deadline.expire()
            raise RequestTimedOut("rate_limit", deadline.seconds) from None

    def limiter_unavailable(self, exc: RateLimitUnavailable) -> HttpError:
        return HttpError(503, str(exc), {"Retry-After": self.retry_after()})

    def limited(self, cid: int, retry: float) -> HttpError:
        self.metrics.rate_limited.inc()
        return HttpError(
            429,
            f"customer {cid}: rate limit {self.cfg.rate_limit} exceeded",
            {"Retry-After": str(int(retry + 0.999))},
        )

    # -- deadline and error mapping ------------------------------------------------------------------
    def retry_after(self) -> str:
        return str(max(1, int(self.cfg.breaker_reset_seconds + 0.999)))

    async def in_thread(
        self, name: str, deadline: Deadline, work: Callable[[], T], request: Request | None = None
    ) -> T:
        """``work()`` in the worker's thread pool (:func:`work_pool`), waited for until ``deadline`` or until
        ``request``'s client disconnects.

        Then the thread is abandoned (it cannot be killed) and :class:`RequestTimedOut` (or
        :class:`ClientDisconnected`) raised; the work stops at its next stage boundary (``Deadline.enter``)
        and, not having committed, logs nothing. If it had already committed (it is writing the prediction
        log), its answer is awaited.

        The wait is one event-loop future, resolved by whichever comes first: the thread's end
        (``call_soon_threadsafe``), a timer at the deadline, or the disconnect watcher — nothing is
        cancelled. The watcher is a detached task that ends by itself: the server's ``receive`` answers
        ``http.disconnect`` when the client goes away or once the response is complete. A cancelled task's
        exception would hold the whole request's objects in a reference cycle that only the garbage
        collector frees (a long pause per collection under load).
        """
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        disconnected = False

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        def run() -> T:
            try:
                return work()
            except RequestTimedOut as exc:
                self.metrics.work_stopped.labels(name, exc.stage).inc()
                log.info("%s: timed-out work stopped before stage %s", name, exc.stage)
                raise

        def finished(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody waits
                loop.call_soon_threadsafe(wake)

        async def watch(receive: Callable[[], Awaitable[Any]]) -> None:
            nonlocal disconnected
            if await client_disconnected(receive) and not woken.done():
                disconnected = True
                woken.set_result(None)

        if request is not None:
            watcher = loop.create_task(watch(request.receive))
            self._watchers.add(watcher)  # the loop keeps only a weak reference to a task
            watcher.add_done_callback(self._watchers.discard)
        timer = loop.call_later(deadline.remaining(), wake)
        done = work_pool().submit(run)
        done.add_done_callback(finished)
        try:
            await woken
        finally:
            timer.cancel()
        if not done.done():
            if deadline.expire():
                if disconnected:
                    raise ClientDisconnected(deadline.stage)
                raise RequestTimedOut(deadline.stage, deadline.seconds)
            await asyncio.wrap_future(done)  # committed: only the log write is left
        return done.result()

    async def in_loop(self, name: str, deadline: Deadline, work: Callable[[], T], request: Request) -> T:
        """``work()`` (which never waits) right here in the event loop, unless ``request``'s client has gone
        (:class:`ClientDisconnected`: nothing scored or logged). Its stages and commit check ``deadline`` as
        in a thread."""
        if await request.is_disconnected():
            raise ClientDisconnected(deadline.stage)
        try:
            return work()
        except RequestTimedOut as exc:
            self.metrics.work_stopped.labels(name, exc.stage).inc()
            raise

    def inline(self, n_items: int) -> bool:
        """Whether a request of ``n_items`` customers / rows may be worked on in the event loop."""
        limit = self.cfg.inline_max_items
        return limit > 0 and n_items <= limit

    def endpoint(self, name: str, handler: Handler) -> Handler:
        """``handler`` with a deadline, its errors mapped to responses, and latency / error metrics."""

        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            metrics = self.metrics
            start = time.perf_counter()
            request.state.deadline = Deadline(self.cfg.request_timeout_seconds)
            in_progress = metrics.in_progress_of(name)
            in_progress.inc()
            try:
                response = await handler(request)
            except HttpError as exc:
                response = json_response({"error": exc.message}, exc.status, exc.headers)
            except ValidationError as exc:
                response = validation_error(exc)
            except RequestTimedOut as exc:
                metrics.timeouts.labels(name, exc.stage).inc()
                log.warning("%s: %s", name, exc)
                response = json_response({"error": str(exc), "stage": exc.stage}, 504)
            except ClientDisconnected as exc:  # nobody reads this answer; nothing was logged
                metrics.disconnects.labels(name, exc.stage).inc()
                response = json_response({"error": str(exc), "stage": exc.stage}, 499)
            except Exception:
                log.exception("%s: unexpected error", name)
                response = json_response({"error": "internal server error"}, 500)
            finally:
                in_progress.dec()
            if response.status_code >= 400:
                metrics.errors.labels(name, str(response.status_code)).inc()
            version = response.headers.get("x-model-version", "none")
            variant = response.headers.get("x-variant", "none")
            elapsed = time.perf_counter() - start
            metrics.latency_of(name, version, variant).observe(elapsed)
            if self.request_lines:
                self.log_request(name, request, response, elapsed, version, variant)
            return response

        return wrapped

    def log_request(
        self, name: str, request: Request, response: Response, elapsed: float, version: str, variant: str
    ) -> None:
        """The request's log line: request id (the prediction log's), customer id hashes, model version,
        variant, latency and outcome."""
        status = response.status_code
        ids = getattr(request.state, "customer_ids", None) or []
        outcome = OUTCOMES.get(status) or ("ok" if status < 400 else "rejected" if status < 500 else "error")
        request_log.info(
            "request",
            extra={
                "fields": {
                    "endpoint": name,
                    "request_id": response.headers.get("x-request-id") or uuid.uuid4().hex,
                    "status": status,
                    "outcome": outcome,
                    "latency_ms": round(elapsed * 1000, 3),
                    "model_version": version,
                    "variant": variant,
                    "customers": len(ids),
                    "customer_id_hashes": [self.customer_hash(c) for c in ids],
                }
            },
        )

    def respond(self, rt: Runtime, scoring: Scoring, deadline: Deadline) -> Response:
        """The response of a scored request, then its prediction-log write (``rt.log``): a failure on the
        way to the response (serialisation, the deadline, a gone client) leaves the log untouched."""
        items, shadow = scoring.items, scoring.shadow
        variants = {i["variant"] for i in items if "variant" in i}
        versions = {i["model_version"] for i in items if "model_version" in i}
        headers = {
            "x-model-version": ",".join(sorted(versions)) or "none",
            "x-variant": ",".join(sorted(variants)) or "none",
            "x-request-id": scoring.request_id,
        }
        response = json_response({"predictions": items}, headers=headers)
        rt.log(scoring, deadline)
        if shadow and not rt.shadow.submit(shadow):
            self.metrics.shadow_dropped.inc(len(shadow))
        for i in items:
            if "variant" in i:
                self.metrics.predictions_of(i["model_version"], i["variant"]).inc()
        for version, member, seconds in scoring.member_seconds:
            self.metrics.member_latency.labels(version, member).observe(seconds)
        return response

    # -- handlers ------------------------------------------------------------------------------------
    async def parse(
        self, request: Request, model: type[M], count: Callable[[M], int], what: str
    ) -> tuple[M, Runtime]:
        """The validated body of an authorised request within the batch limit, and the runtime."""
        self.check_key(request)
        self.check_content_type(request)
        req = model.model_validate_json(await self.body_of(request))
        self.check_batch(count(req), what)
        return req, self.current()

    async def predict(self, request: Request) -> Response:
        req, rt = await self.parse(request, PredictRequest, lambda r: len(r.customer_ids), "customer ids")
        ids = req.customer_ids
        if self.request_lines:
            request.state.customer_ids = ids
        deadline = deadline_of(request)
        cached = cached_features(rt, ids) if not req.context and self.inline(len(ids)) else None
        if cached is not None:
            await self.alimit(rt, ids, deadline)
            return await self.in_loop(
                "predict", deadline, lambda: self.score_ids(rt, req, cached, deadline), request
            )

        def work() -> Response:
            deadline.enter("rate_limit")
            self.limit(rt, ids)
            return self.score_ids(rt, req, self.features(rt, ids, deadline), deadline)

        return await self.in_thread("predict", deadline, work, request)

    def features(self, rt: Runtime, ids: list[int], deadline: Deadline) -> dict[int, dict[str, Any]]:
        """The customers' online features (cache, then one store read through the breaker; blocking)."""
        deadline.enter("feature_store")
        try:
            feats = rt.features_for(ids)
        except FeatureStoreUnavailable as exc:
            self.metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 2))
            raise HttpError(
                503,
                f"{exc}; id-only predictions are unavailable, POST /predict_features still works",
                {"Retry-After": self.retry_after()},
            ) from None
        self.metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 0))
        return feats

    def score_ids(
        self, rt: Runtime, req: PredictRequest, feats: dict[int, dict[str, Any]], deadline: Deadline
    ) -> Response:
        """Score the customers of ``req`` on their features ``feats`` (plus the request-time ones), answer
        and log."""
        live = self.request_time_features(rt, req, deadline)
        rows: list[dict[str, Any] | None] = []
        errors = {}
        for i, cid in enumerate(req.customer_ids):
            values = feats.get(cid)
            if not values:
                rows.append(None)
                errors[i] = f"unknown customer_id {cid}: no features in the online store"
                self.metrics.item_errors.labels("unknown_customer").inc()
            else:
                rows.append({**values, **live[cid]} if cid in live else values)
        scoring = rt.score_rows(req.customer_ids, rows, req.explain, errors, deadline)
        if live:
            for item in scoring.items:
                if item["customer_id"] in live and "error" not in item:
                    item["live_features"] = sorted(live[item["customer_id"]])
        return self.respond(rt, scoring, deadline)

    def request_time_features(
        self, rt: Runtime, req: PredictRequest, deadline: Deadline
    ) -> dict[int, dict[str, Any]]:
        """The features of ``req.context`` computed in the request (customer id -> feature -> value), at
        ``req.as_of`` or the serving clock, by the offline pipeline's transformation code."""
        if not req.context:
            return {}
        deadline.enter("request_time_features")
        requested = set(req.customer_ids)
        tickets: dict[int, list[dict[str, Any]]] = {}
        for entry in req.context:
            if entry.customer_id in requested:
                tickets.setdefault(entry.customer_id, []).extend(
                    t.model_dump() for t in entry.support_tickets
                )
        return ticket_features(tickets, req.as_of or rt.now) if tickets else {}

    async def predict_features(self, request: Request) -> Response:
        req, rt = await self.parse(request, PredictFeaturesRequest, lambda r: len(r.rows), "rows")
        dumped = [r.model_dump() for r in req.rows]
        if self.request_lines:
            request.state.customer_ids = [r["customer_id"] for r in dumped]
        required = rt.model_for(rt.state().stable_version).features
        missing = sorted({f for f in required if f not in req.rows[0].model_fields_set})
        if missing:
            raise HttpError(
                422,
                f"rows.0: feature(s) {missing[:5]}{'...' if len(missing) > 5 else ''} are required by the model (null allowed)",
            )

        deadline = deadline_of(request)
        ids = [r.pop("customer_id") for r in dumped]
        known = [i for i in ids if i is not None]

        def score() -> Response:
            scoring = rt.score_rows(ids, dumped, req.explain, deadline=deadline)
            return self.respond(rt, scoring, deadline)

        if self.inline(len(ids)):
            await self.alimit(rt, known, deadline)
            return await self.in_loop("predict_features", deadline, score, request)

        def work() -> Response:
            deadline.enter("rate_limit")
            self.limit(rt, known)
            return score()

        return await self.in_thread("predict_features", deadline, work, request)

    async def ready(self, request: Request) -> Response:
        rt = self.runtime()
        if rt is None:
            return json_response({"ready": False, "reason": "model not loaded"}, 503)
        ok, reason = await run_in_threadpool(rt.ready)
        self.metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 0))
        return json_response({"ready": ok, "reason": reason, "models": sorted(rt.models)}, 200 if ok else 503)

    async def rollout(self, request: Request) -> Response:
        self.check_key(request, admin=True)
        rt = self.current()
        state = rt.state()
        return json_response(
            {
                "phase": state.phase,
                "stable_version": state.stable_version,
                "candidate_version": state.candidate_version,
                "loaded_versions": sorted(rt.models),
                "breaker": rt.breaker.state,
            }
        )

    def predict_endpoints(self) -> dict[str, Handler]:
        """``POST`` path -> the endpoint (the Starlette routes and :meth:`hot_routes` share them)."""
        return self._predict_endpoints

    def hot_routes(self) -> dict[str, ASGIApp]:
        """The predict endpoints as bare ASGI apps (``POST`` path -> app): what the routes of
        :meth:`routes` do for them, without a router or middleware in front (unexpected errors are
        already answered 500 by :meth:`endpoint`)."""
        return {path: _asgi(handler) for path, handler in self.predict_endpoints().items()}

    def routes(self) -> list[BaseRoute]:
        return [
            *(Route(path, handler, methods=["POST"]) for path, handler in self.predict_endpoints().items()),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/rollout", self.endpoint("rollout", self.rollout), methods=["GET"]),
        ]


def _asgi(handler: Handler) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def cached_features(rt: Runtime, ids: list[int]) -> dict[int, dict[str, Any]] | None:
    """The customers' features when all of them are in the runtime's feature cache (an empty dict marks
    a customer the store does not know), else None."""
    cache = rt.cache
    if cache is None:
        return None
    found: dict[int, dict[str, Any]] = {}
    for cid in ids:
        values = cache.get(cid)
        if values is None:
            return None
        found[cid] = values
    return found
