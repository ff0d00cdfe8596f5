"""The HTTP fast path: a Starlette app (mounted into the BentoML service with ``@bentoml.asgi_app``).

Endpoints (docs/serving.md): ``POST /predict``, ``POST /predict_features``, ``GET /rollout`` (admin),
``GET /ready`` (model loaded AND feature store answers), ``GET /openapi.json``. Request bodies are parsed and
validated by pydantic (``model_validate_json``), responses serialised with orjson. Errors: 401 (API key),
413 (body or batch too large), 422 (malformed JSON / types, naming the field and the rule), 429 (per-customer
rate limit, with ``Retry-After``), 503 (feature store unavailable / breaker open, id-only requests), 504
(request timeout).

Metrics are created through ``metrics_module`` — ``bentoml.metrics`` inside the service (they then appear on
BentoML's ``/metrics``, multiprocess-safe), ``prometheus_client`` elsewhere.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic import create_model as create_pydantic_model
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from churn_assets.feature_store.definitions import all_features
from churn_assets.serving.resilience import (
    BREAKER_STATE_CODE,
    Deadline,
    FeatureStoreUnavailable,
    RequestTimedOut,
)
from churn_assets.serving.runtime import Runtime
from churn_assets.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5.0)


INT64_MAX = 2**63 - 1
CustomerId = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Int64 = Annotated[StrictInt, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]


class PredictRequest(BaseModel):
    """Customer ids scored with features from the online store."""

    model_config = ConfigDict(extra="forbid")
    customer_ids: list[StrictInt] = Field(
        min_length=1, description="Customer ids (per-item errors for unknown)."
    )
    explain: StrictBool = Field(False, description="Return the top-3 SHAP reasons per customer.")


_PY_TYPES: dict[str, Any] = {"int64": Int64, "float64": Int64 | StrictFloat, "string": StrictStr}
FeatureRow: type[BaseModel] = create_pydantic_model(  # type: ignore[call-overload]
    "FeatureRow",
    __config__=ConfigDict(extra="forbid"),
    customer_id=(CustomerId | None, Field(None, description="Optional: logged, rate limited, routed.")),
    **{f.name: (_PY_TYPES[f.dtype] | None, Field(None, description=f.description)) for f in all_features()},
)


class PredictFeaturesRequest(BaseModel):
    """Explicit feature rows (validated against the feature declarations); no feature store involved."""

    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(min_length=1)  # type: ignore[valid-type]
    explain: StrictBool = False


class Metrics:
    def __init__(self, module: Any) -> None:
        self.latency = module.Histogram(
            "churn_request_seconds",
            "Request latency by endpoint, model version and variant.",
            ["endpoint", "model_version", "variant"],
            buckets=LATENCY_BUCKETS,
        )
        self.predictions = module.Counter(
            "churn_predictions",
            "Scored customers by model version and variant.",
            ["model_version", "variant"],
        )
        self.errors = module.Counter(
            "churn_errors", "Error responses by endpoint and status.", ["endpoint", "status"]
        )
        self.item_errors = module.Counter(
            "churn_item_errors", "Per-item errors (e.g. unknown customer).", ["reason"]
        )
        self.timeouts = module.Counter(
            "churn_timeouts",
            "Requests answered 504, by endpoint and the stage their work was in at the deadline.",
            ["endpoint", "stage"],
        )
        self.work_stopped = module.Counter(
            "churn_timed_out_work_stopped",
            "Work of timed-out requests that stopped in its thread before this stage (nothing returned or "
            "logged).",
            ["endpoint", "stage"],
        )
        self.rate_limited = module.Counter(
            "churn_rate_limited", "Requests rejected by the per-customer limit."
        )
        self.breaker = (
            module.Gauge(
                "churn_breaker_state",
                "Feature-store circuit breaker: 0 closed, 1 half-open, 2 open.",
                multiprocess_mode="max",
            )
            if _accepts_multiprocess(module)
            else module.Gauge(
                "churn_breaker_state", "Feature-store circuit breaker: 0 closed, 1 half-open, 2 open."
            )
        )


_METRICS: dict[str, Metrics] = {}


def _accepts_multiprocess(module: Any) -> bool:
    return getattr(module, "__name__", "") == "bentoml.metrics"


def _json(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None, background: Any = None
) -> Response:
    return Response(
        orjson.dumps(payload), status, headers=headers, media_type="application/json", background=background
    )


def _validation_error(exc: ValidationError) -> Response:
    detail = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "rule": e["type"], "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return _json({"error": "invalid request", "detail": detail}, 422)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def build_app(
    settings: Settings,
    runtime: Callable[[], Runtime | None],
    metrics_module: Any = None,
    base_spec: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The Starlette app; ``runtime()`` returns the worker's :class:`Runtime` (None until loaded).

    ``base_spec()`` (inside BentoML: the service's own OpenAPI) makes the app answer ``/docs.json`` — the
    spec behind BentoML's docs page ``/`` — with that spec plus these endpoints.
    """
    if metrics_module is None:
        import prometheus_client as metrics_module
    cfg = settings.serving
    key = getattr(metrics_module, "__name__", str(id(metrics_module)))
    if key not in _METRICS:
        _METRICS[key] = Metrics(metrics_module)
    metrics = _METRICS[key]

    def current() -> Runtime:
        rt = runtime()
        if rt is None:
            raise HttpError(503, "model not loaded yet")
        return rt

    def deadline_of(request: Request) -> Deadline:
        deadline: Deadline = request.state.deadline
        return deadline

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise HttpError(413, f"body of {length} bytes exceeds the limit of {cfg.max_body_bytes}")
        deadline = deadline_of(request)
        deadline.enter("read_body")
        try:
            with anyio.fail_after(deadline.remaining()):
                body = await request.body()
        except TimeoutError:
            raise RequestTimedOut("read_body", deadline.seconds) from None
        if len(body) > cfg.max_body_bytes:
            raise HttpError(413, f"body of {len(body)} bytes exceeds the limit of {cfg.max_body_bytes}")
        return body

    def check_key(request: Request) -> None:
        if cfg.api_key is not None and request.headers.get("x-api-key") != cfg.api_key:
            raise HttpError(401, "missing or wrong x-api-key header")

    def check_batch(n: int, what: str) -> None:
        if n > cfg.max_batch_size:
            raise HttpError(413, f"{n} {what} exceed max_batch_size {cfg.max_batch_size}")

    def limit(rt: Runtime, ids: list[int]) -> None:
        for cid in dict.fromkeys(ids):
            retry = rt.rate_limit.hit(cid)
            if retry is not None:
                metrics.rate_limited.inc()
                raise HttpError(
                    429,
                    f"customer {cid}: rate limit {cfg.rate_limit} exceeded",
                    {"Retry-After": str(int(retry + 0.999))},
                )

    async def in_thread(name: str, deadline: Deadline, work: Callable[[], T]) -> T:
        """``work()`` in the thread pool, waited for until ``deadline``.

        At the deadline the thread is abandoned (it cannot be killed) and :class:`RequestTimedOut` raised;
        the work stops at its next stage boundary (``Deadline.enter``) and, not having committed, logs
        nothing. If it had already committed (it is writing the prediction log), its answer is awaited.
        """
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(work())
            except RequestTimedOut as exc:
                metrics.work_stopped.labels(name, exc.stage).inc()
                log.info("%s: timed-out work stopped before stage %s", name, exc.stage)
                done.set_exception(exc)
            except BaseException as exc:
                done.set_exception(exc)

        with anyio.move_on_after(deadline.remaining()):
            await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        if not done.done():
            if deadline.expire():
                raise RequestTimedOut(deadline.stage, deadline.seconds)
            await anyio.to_thread.run_sync(done.result)  # committed: only the log write is left
        return done.result()

    def endpoint(
        name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            start = time.perf_counter()
            request.state.deadline = Deadline(cfg.request_timeout_seconds)
            try:
                response = await handler(request)
            except HttpError as exc:
                response = _json({"error": exc.message}, exc.status, exc.headers)
            except ValidationError as exc:
                response = _validation_error(exc)
            except RequestTimedOut as exc:
                metrics.timeouts.labels(name, exc.stage).inc()
                log.warning("%s: %s", name, exc)
                response = _json({"error": str(exc), "stage": exc.stage}, 504)
            if response.status_code >= 400:
                metrics.errors.labels(name, str(response.status_code)).inc()
            version = response.headers.get("x-model-version", "none")
            variant = response.headers.get("x-variant", "none")
            metrics.latency.labels(name, version, variant).observe(time.perf_counter() - start)
            return response

        return wrapped

    def respond(rt: Runtime, items: list[dict[str, Any]], shadow: list[Any]) -> Response:
        variants = {i["variant"] for i in items if "variant" in i}
        versions = {i["model_version"] for i in items if "model_version" in i}
        for i in items:
            if "variant" in i:
                metrics.predictions.labels(i["model_version"], i["variant"]).inc()
        task = BackgroundTask(run_in_threadpool, rt.score_shadow, shadow) if shadow else None
        headers = {
            "x-model-version": ",".join(sorted(versions)) or "none",
            "x-variant": ",".join(sorted(variants)) or "none",
        }
        return _json({"predictions": items}, headers=headers, background=task)

    async def predict(request: Request) -> Response:
        check_key(request)
        body = await body_of(request)
        req = PredictRequest.model_validate_json(body)
        check_batch(len(req.customer_ids), "customer ids")
        rt = current()
        deadline = deadline_of(request)

        def work() -> Response:
            deadline.enter("rate_limit")
            limit(rt, req.customer_ids)
            deadline.enter("feature_store")
            try:
                feats = rt.features_for(req.customer_ids)
            except FeatureStoreUnavailable as exc:
                metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 2))
                raise HttpError(
                    503,
                    f"{exc}; id-only predictions are unavailable, POST /predict_features still works",
                    {"Retry-After": str(int(cfg.breaker_reset_seconds))},
                ) from exc
            metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 0))
            rows: list[dict[str, Any] | None] = []
            errors = {}
            for i, cid in enumerate(req.customer_ids):
                values = feats.get(cid)
                if not values:
                    rows.append(None)
                    errors[i] = f"unknown customer_id {cid}: no features in the online store"
                    metrics.item_errors.labels("unknown_customer").inc()
                else:
                    rows.append(values)
            items, shadow = rt.predict_rows(req.customer_ids, rows, req.explain, errors, deadline)
            return respond(rt, items, shadow)

        return await in_thread("predict", deadline, work)

    async def predict_features(request: Request) -> Response:
        check_key(request)
        body = await body_of(request)
        req = PredictFeaturesRequest.model_validate_json(body)
        check_batch(len(req.rows), "rows")
        rt = current()
        dumped = [r.model_dump() for r in req.rows]
        missing = sorted(
            {
                f
                for f in rt.model_for(rt.state().stable_version).features
                if f not in req.rows[0].model_fields_set
            }
        )
        if missing:
            raise HttpError(
                422,
                f"rows.0: feature(s) {missing[:5]}{'...' if len(missing) > 5 else ''} are required by the model (null allowed)",
            )

        deadline = deadline_of(request)

        def work() -> Response:
            ids = [r.pop("customer_id") for r in dumped]
            deadline.enter("rate_limit")
            limit(rt, [i for i in ids if i is not None])
            items, shadow = rt.predict_rows(ids, dumped, req.explain, deadline=deadline)
            return respond(rt, items, shadow)

        return await in_thread("predict_features", deadline, work)

    async def ready(request: Request) -> Response:
        rt = runtime()
        if rt is None:
            return _json({"ready": False, "reason": "model not loaded"}, 503)
        ok, reason = await run_in_threadpool(rt.ready)
        metrics.breaker.set(BREAKER_STATE_CODE.get(rt.breaker.state, 0))
        return _json({"ready": ok, "reason": reason, "models": sorted(rt.models)}, 200 if ok else 503)

    async def rollout(request: Request) -> Response:
        check_key(request)
        rt = current()
        state = rt.state()
        return _json(
            {
                "phase": state.phase,
                "stable_version": state.stable_version,
                "candidate_version": state.candidate_version,
                "loaded_versions": sorted(rt.models),
                "breaker": rt.breaker.state,
            }
        )

    async def openapi(request: Request) -> Response:
        return _json(openapi_spec())

    async def docs_json(request: Request) -> Response:
        return _json(merged_spec(base_spec() if base_spec is not None else None))

    async def docs(request: Request) -> Response:
        return Response(SWAGGER_HTML, media_type="text/html")

    routes: list[BaseRoute] = [
        Route("/predict", endpoint("predict", predict), methods=["POST"]),
        Route("/predict_features", endpoint("predict_features", predict_features), methods=["POST"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/rollout", endpoint("rollout", rollout), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    assets = swagger_assets()
    if assets is not None:
        routes += [
            Route("/docs", docs, methods=["GET"]),
            Mount("/docs/static", StaticFiles(directory=assets), name="swagger_static"),
        ]
    if base_spec is not None:
        routes.append(Route("/docs.json", docs_json, methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return _json({"error": str(getattr(exc, "detail", exc)), "path": request.url.path}, status)

    return Starlette(routes=routes, exception_handlers={StarletteHTTPException: http_error})


class Reason(BaseModel):
    feature: str
    contribution: float = Field(description="SHAP contribution (log-odds).")


class Prediction(BaseModel):
    """One scored customer (or feature row)."""

    customer_id: int | None
    probability: float = Field(ge=0, le=1, description="Churn probability.")
    label: int = Field(description="1 when probability >= threshold.")
    threshold: float
    model_name: str
    model_version: str
    variant: str = Field(description="champion or canary.")
    reasons: list[Reason] | None = Field(None, description="Top SHAP reasons when `explain` was asked.")


class ItemError(BaseModel):
    """An item that could not be scored (e.g. unknown customer id); the rest of the batch is."""

    customer_id: int | None
    error: str


class PredictResponse(BaseModel):
    predictions: list[Prediction | ItemError] = Field(description="One item per requested id/row, in order.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, naming the field and rule where there is one.")
    detail: list[dict[str, str]] | None = Field(None, description="422: field, rule, message per error.")
    stage: str | None = Field(None, description="504: what the request was doing at the deadline.")


def openapi_spec() -> dict[str, Any]:
    """OpenAPI 3.1 of the fast-path endpoints, from the pydantic models."""
    defs: dict[str, Any] = {}

    def schema(model: type[BaseModel]) -> dict[str, Any]:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(s.pop("$defs", {}))
        defs[model.__name__] = s
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_schema = schema(ErrorResponse)
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": error_schema}}}
        for code, text in [
            (401, "missing or wrong x-api-key"),
            (413, "body or batch too large"),
            (422, "malformed JSON or types (names the field and rule)"),
            (429, "per-customer rate limit (Retry-After)"),
            (503, "feature store unavailable (breaker open)"),
            (504, "request timeout"),
        ]
    }
    ok = {
        "200": {
            "description": "per-customer predictions",
            "content": {"application/json": {"schema": schema(PredictResponse)}},
        }
    }
    security: list[dict[str, list[str]]] = [{"ApiKey": []}]

    def post(model: type[BaseModel], summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "tags": ["churn"],
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema(model)}}},
                "responses": {**ok, **errors},
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "churnops serving", "version": "1"},
        "paths": {
            "/predict": post(PredictRequest, "Score customers by id (features from the online store)"),
            "/predict_features": post(PredictFeaturesRequest, "Score explicit feature rows"),
        },
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "Needed only when `serving.api_key` is set.",
                }
            },
        },
    }


def merged_spec(base: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` (BentoML's spec: infra endpoints) with the fast-path endpoints and schemas added."""
    ours = openapi_spec()
    if not base:
        return ours
    merged = {**base, "openapi": ours["openapi"]}
    merged["paths"] = {**base.get("paths", {}), **ours["paths"]}
    components = dict(base.get("components") or {})
    for section, entries in ours["components"].items():
        components[section] = {**components.get(section, {}), **entries}
    merged["components"] = components
    return merged


def swagger_assets() -> str | None:
    """Swagger UI's static files as shipped inside bentoml (no network needed), or None without bentoml."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("bentoml")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "_internal" / "server" / "static_content"
    return str(folder) if (folder / "swagger-ui-bundle.js").exists() else None


SWAGGER_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8"><title>churnops serving - API</title>
  <link rel="stylesheet" type="text/css" href="docs/static/swagger-ui.css" />
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/static/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
    };
  </script>
</body>
</html>
"""
