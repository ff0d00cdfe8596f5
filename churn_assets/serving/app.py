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

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

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
from starlette.routing import Route

from churn_assets.feature_store.definitions import all_features
from churn_assets.serving.resilience import BREAKER_STATE_CODE, FeatureStoreUnavailable
from churn_assets.serving.runtime import Runtime
from churn_assets.settings import Settings

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
    settings: Settings, runtime: Callable[[], Runtime | None], metrics_module: Any = None
) -> Starlette:
    """The Starlette app; ``runtime()`` returns the worker's :class:`Runtime` (None until loaded)."""
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

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise HttpError(413, f"body of {length} bytes exceeds the limit of {cfg.max_body_bytes}")
        body = await request.body()
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

    def endpoint(
        name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await asyncio.wait_for(handler(request), timeout=cfg.request_timeout_seconds)
            except HttpError as exc:
                response = _json({"error": exc.message}, exc.status, exc.headers)
            except ValidationError as exc:
                response = _validation_error(exc)
            except TimeoutError:
                response = _json({"error": f"request exceeded {cfg.request_timeout_seconds} s"}, 504)
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

        def work() -> Response:
            limit(rt, req.customer_ids)
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
            items, shadow = rt.predict_rows(req.customer_ids, rows, req.explain, errors)
            return respond(rt, items, shadow)

        return await run_in_threadpool(work)

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

        def work() -> Response:
            ids = [r.pop("customer_id") for r in dumped]
            limit(rt, [i for i in ids if i is not None])
            items, shadow = rt.predict_rows(ids, dumped, req.explain)
            return respond(rt, items, shadow)

        return await run_in_threadpool(work)

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

    routes = [
        Route("/predict", endpoint("predict", predict), methods=["POST"]),
        Route("/predict_features", endpoint("predict_features", predict_features), methods=["POST"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/rollout", endpoint("rollout", rollout), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return _json({"error": str(getattr(exc, "detail", exc)), "path": request.url.path}, status)

    return Starlette(routes=routes, exception_handlers={StarletteHTTPException: http_error})


def openapi_spec() -> dict[str, Any]:
    """OpenAPI 3.1 of the fast-path endpoints, from the pydantic models."""
    defs: dict[str, Any] = {}

    def schema(model: type[BaseModel]) -> dict[str, Any]:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(s.pop("$defs", {}))
        defs[model.__name__] = s
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}
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
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }

    def post(model: type[BaseModel], summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
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
        "components": {"schemas": defs},
    }
