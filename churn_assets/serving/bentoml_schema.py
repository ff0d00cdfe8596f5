"""BentoML's ``/schema.json`` with the fast-path endpoints, so BentoML's own clients can call them.

``bentoml.SyncHTTPClient(url)`` and ``bentoml.AsyncHTTPClient(url)`` discover a service's endpoints from
``/schema.json``, which BentoML builds from its ``@bentoml.api`` methods only: the mounted ``/predict`` and
``/predict_features`` (the fast path, ``serving.routes``) are not in it. :class:`SchemaWithFastPath` is a
pure ASGI middleware (added with ``Service.add_asgi_middleware``) that answers ``GET /schema.json`` with
BentoML's document plus :func:`fast_path_routes`, and passes every other request straight through (one
path comparison): the endpoints stay on the fast path, and ``client.predict(customer_ids=[...])`` works.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from pydantic import BaseModel

from churn_assets.serving.schemas import PredictFeaturesRequest, PredictRequest, PredictResponse
from churn_assets.settings import ServingSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
SCHEMA_PATH = "/schema.json"


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/$defs/{model}")


def fast_path_routes(cfg: ServingSettings | None = None) -> list[dict[str, Any]]:
    """The fast-path endpoints as ``/schema.json`` route entries (BentoML's format: name, route, input and
    output JSON schemas); the batch limit ``serving.max_batch_size`` is in the input schemas."""
    cfg = cfg or ServingSettings()
    endpoints: list[tuple[str, type[BaseModel], str, str]] = [
        (
            "predict",
            PredictRequest,
            "customer_ids",
            "Score customers by id (features from the online store).",
        ),
        ("predict_features", PredictFeaturesRequest, "rows", "Score explicit feature rows."),
    ]
    routes = []
    for name, model, field, doc in endpoints:
        schema = _json_schema(model)
        schema["properties"][field]["maxItems"] = cfg.max_batch_size
        routes.append(
            {
                "name": name,
                "route": f"/{name}",
                "description": doc,
                "batchable": False,
                "input": schema,
                "output": _json_schema(PredictResponse),
                "is_task": False,
            }
        )
    return routes


class SchemaWithFastPath:
    """ASGI middleware: ``GET /schema.json`` = ``base_schema()`` with ``routes`` appended (by name: a route
    of the base document with the same name is replaced); everything else goes to ``app`` untouched."""

    def __init__(
        self, app: ASGIApp, base_schema: Callable[[], dict[str, Any]], routes: list[dict[str, Any]]
    ) -> None:
        self.app, self.base_schema, self.routes = app, base_schema, routes
        self._body: bytes | None = None  # the document is the same for the life of the worker

    def document(self) -> dict[str, Any]:
        base = self.base_schema()
        names = {r["name"] for r in self.routes}
        kept = [r for r in base.get("routes", []) if r.get("name") not in names]
        return {**base, "routes": kept + self.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SCHEMA_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = orjson.dumps(self.document())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})
