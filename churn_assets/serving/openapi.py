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
)


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
