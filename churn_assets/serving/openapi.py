"""The OpenAPI document of the HTTP fast path (from the pydantic models in ``serving.schemas``) and the
Swagger UI page that renders it (``/docs``, static files shipped inside bentoml)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from churn_assets.serving.schemas import (
    ErrorResponse,
    PredictFeaturesRequest,
    PredictRequest,
    PredictResponse,
    RolloutResponse,
)
from churn_assets.settings import ServingSettings


def openapi_spec(cfg: ServingSettings | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 of the fast-path endpoints, from the pydantic models and the serving settings ``cfg``.

    It declares what the service enforces: ``/rollout`` always needs the key (header ``x-api-key`` or a
    bearer token); ``/predict`` and ``/predict_features`` need it when ``serving.require_api_key``, else they
    declare no security and no 401 answer; ``customer_ids`` and ``rows`` have at most ``serving.max_batch_size`` items.
    """
    cfg = cfg or ServingSettings()
    require_api_key = cfg.require_api_key
    defs: dict[str, Any] = {}

    def schema(model: type[BaseModel]) -> dict[str, Any]:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(s.pop("$defs", {}))
        defs[model.__name__] = s
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_schema = schema(ErrorResponse)

    def errors(*codes: int) -> dict[str, Any]:
        return {
            str(code): {
                "description": ERRORS[code],
                "content": {"application/json": {"schema": error_schema}},
            }
            for code in codes
        }

    def ok(model: type[BaseModel], description: str) -> dict[str, Any]:
        return {
            "200": {"description": description, "content": {"application/json": {"schema": schema(model)}}}
        }

    key: list[dict[str, list[str]]] = [{"ApiKey": []}, {"BearerKey": []}]  # either one
    predict_errors = (
        (401, 413, 415, 422, 429, 503, 504) if require_api_key else (413, 415, 422, 429, 503, 504)
    )

    def post(model: type[BaseModel], summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "tags": ["churn"],
                "security": key if require_api_key else [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema(model)}}},
                "responses": {**ok(PredictResponse, "per-customer predictions"), **errors(*predict_errors)},
            }
        }

    rollout = {
        "get": {
            "summary": "Rollout phase, versions and breaker state (admin)",
            "tags": ["admin"],
            "security": key,
            "responses": {
                **ok(RolloutResponse, "the rollout as this worker sees it"),
                **errors(401, 403, 503),
            },
        }
    }
    paths = {
        "/predict": post(PredictRequest, "Score customers by id (features from the online store)"),
        "/predict_features": post(PredictFeaturesRequest, "Score explicit feature rows"),
        "/rollout": rollout,
    }
    for model, field in [("PredictRequest", "customer_ids"), ("PredictFeaturesRequest", "rows")]:
        defs[model]["properties"][field]["maxItems"] = cfg.max_batch_size
    return {
        "openapi": "3.1.0",
        "info": {"title": "churnops serving", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "Must equal the service's `serving.api_key`.",
                },
                "BearerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The same key as a bearer token (what BentoML's clients send as `token`).",
                },
            },
        },
    }


ERRORS = {
    401: "missing or wrong x-api-key (WWW-Authenticate names the header)",
    403: "admin endpoint disabled: the service has no serving.api_key",
    413: "body or batch too large",
    415: "content-type is not application/json (Accept-Post names it)",
    422: "malformed JSON, wrong types, non-finite numbers or missing features (names the field and rule)",
    429: "per-customer rate limit (Retry-After)",
    503: "model not loaded yet, or feature store unavailable (breaker open)",
    504: "request timeout",
}


def merged_spec(base: dict[str, Any] | None, cfg: ServingSettings | None = None) -> dict[str, Any]:
    """``base`` (BentoML's spec: infra endpoints) with the fast-path endpoints and schemas added."""
    ours = openapi_spec(cfg)
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
