"""The HTTP fast path: a Starlette app (mounted into the BentoML service with ``@bentoml.asgi_app``).

Endpoints (docs/serving.md): ``POST /predict``, ``POST /predict_features``, ``GET /rollout`` (admin),
``GET /ready`` (model loaded AND feature store answers), ``GET /openapi.json``. Request bodies are parsed and
validated by pydantic (``model_validate_json``), responses serialised with orjson. Errors: 401 (API key,
with ``WWW-Authenticate``), 403 (admin endpoint without a configured key), 404, 405 (with ``Allow``), 413
(body or batch too large), 415 (not ``application/json``, with ``Accept-Post``), 422 (malformed JSON /
types / non-finite numbers / missing features, naming the field and the rule), 429 (per-customer rate
limit, with ``Retry-After``), 503 (feature store unavailable / breaker open, id-only requests), 504
(request timeout).

The parts: ``serving.schemas`` (request / response models), ``serving.routes`` (the endpoints),
``serving.openapi`` (the OpenAPI document and the Swagger UI page), ``serving.http_metrics`` (Prometheus
metrics, through ``metrics_module``: ``bentoml.metrics`` inside the service, ``prometheus_client``
elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from churn_assets.serving.http_metrics import metrics_for
from churn_assets.serving.openapi import SWAGGER_HTML, merged_spec, openapi_spec, swagger_assets
from churn_assets.serving.routes import FastPath, json_response
from churn_assets.serving.runtime import Runtime
from churn_assets.settings import ServingSettings, Settings


def _doc_routes(base_spec: Callable[[], dict[str, Any]] | None, cfg: ServingSettings) -> list[BaseRoute]:
    """``/openapi.json``; ``/docs`` (Swagger UI) when its static files are installed; ``/docs.json``
    (``base_spec()`` plus the fast-path endpoints) when there is a base spec."""
    spec = openapi_spec(cfg)

    async def openapi(request: Request) -> Response:
        return json_response(spec)

    async def docs_json(request: Request) -> Response:
        return json_response(merged_spec(base_spec() if base_spec is not None else None, cfg))

    async def docs(request: Request) -> Response:
        return Response(SWAGGER_HTML, media_type="text/html")

    routes: list[BaseRoute] = [Route("/openapi.json", openapi, methods=["GET"])]
    assets = swagger_assets()
    if assets is not None:
        routes += [
            Route("/docs", docs, methods=["GET"]),
            Mount("/docs/static", StaticFiles(directory=assets), name="swagger_static"),
        ]
    if base_spec is not None:
        routes.append(Route("/docs.json", docs_json, methods=["GET"]))
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) as JSON, with the exception's headers (405: ``Allow``)."""
    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    return json_response(
        {"error": str(getattr(exc, "detail", exc)), "path": request.url.path}, status, headers
    )


def build_app(
    settings: Settings,
    runtime: Callable[[], Runtime | None],
    metrics_module: Any = None,
    base_spec: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The Starlette app; ``runtime()`` returns the worker's :class:`Runtime` (None until loaded). Its
    predict endpoints are also in :func:`hot_routes` as bare ASGI apps.

    ``base_spec()`` (inside BentoML: the service's own OpenAPI) makes the app answer ``/docs.json`` — the
    spec behind BentoML's docs page ``/`` — with that spec plus these endpoints.
    """
    fast_path = FastPath(settings.serving, runtime, metrics_for(metrics_module), settings.logging)
    app = Starlette(
        routes=fast_path.routes() + _doc_routes(base_spec, settings.serving),
        exception_handlers={StarletteHTTPException: _http_error},
    )
    app.state.hot_routes = fast_path.hot_routes()
    return app


def hot_routes(app: Starlette) -> dict[str, ASGIApp]:
    """The predict endpoints of an app of :func:`build_app` as bare ASGI apps (``POST`` path -> app), for
    the HTTP server to dispatch past the host's middlewares (``serving.http_server``)."""
    routes: dict[str, ASGIApp] = app.state.hot_routes
    return routes
