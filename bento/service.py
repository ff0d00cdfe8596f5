"""The churnops BentoML service (see docs/serving.md).

Models are declared as ``bentoml.models.BentoModel`` class attributes from ``serving_models.json`` (written by
``churn_assets.serving.bento_build``): ``stable`` always, ``candidate`` while a rollout is active. A built
bento reads the manifest it was built with (``bundled_serving_models.json`` beside this file); run from the
source tree, the service reads the one in the settings' BentoML home. The hot endpoints live in a
Starlette app mounted with ``@bentoml.asgi_app`` (the fast path); ``POST /predict`` and
``/predict_features`` are dispatched by the HTTP server straight to its endpoints (``serving.http_server``).
BentoML keeps its own ``/livez``, ``/readyz`` (``__is_ready__``: model loaded AND feature store answers) and
``/metrics``.
"""

import gc
import json
import logging
from pathlib import Path
from typing import Any

import bentoml

from churn_assets.serving.app import build_app, hot_routes
from churn_assets.serving.bento_build import BUNDLED_MANIFEST_NAME, load_exported, manifest_path
from churn_assets.serving.bentoml_schema import SchemaWithFastPath, fast_path_routes
from churn_assets.serving.http_metrics import own_multiprocess_dir
from churn_assets.serving.http_server import install as install_http_timeouts
from churn_assets.serving.runtime import Runtime
from churn_assets.settings import get_settings
from churn_assets.structured_logging import configure_logging

SETTINGS = get_settings()
_BUNDLED = Path(__file__).parent / BUNDLED_MANIFEST_NAME
MANIFEST: dict[str, Any] = json.loads(
    (_BUNDLED if _BUNDLED.exists() else manifest_path(SETTINGS)).read_text()
)
configure_logging(SETTINGS.logging)  # console lines or JSON lines (logging.format), on stderr
# This server's metric files in a folder of its own: another server started from the same BentoML home
# does not wipe them (BentoML empties its shared folder at every server start).
own_multiprocess_dir(SETTINGS.bentoml_home)
_RUNTIME: dict[str, Runtime] = {}
log = logging.getLogger("churnops.serving")
# /docs.json (the spec behind BentoML's docs page `/`) = BentoML's spec + the mounted endpoints.
fast_app = build_app(
    SETTINGS, lambda: _RUNTIME.get("runtime"), bentoml.metrics, lambda: ChurnService.openapi_spec.asdict()
)
# uvicorn (started by BentoML after this import) closes connections that are slow to send their headers,
# and hands POST /predict and /predict_features straight to the fast app's endpoints, past BentoML's
# middlewares (OpenTelemetry, its request metrics, traffic timeout); everything else takes BentoML's stack.
install_http_timeouts(
    SETTINGS.serving.header_timeout_seconds,
    SETTINGS.serving.keep_alive_timeout_seconds,
    hot_routes(fast_app),
)


@bentoml.asgi_app(fast_app, path="/")
@bentoml.service(
    name="churn_service",
    workers=SETTINGS.serving.workers,
    # A backstop only: the app answers 504 itself at request_timeout_seconds, naming the stage.
    traffic={"timeout": SETTINGS.serving.request_timeout_seconds + 1.0},
    logging={"access": {"enabled": False}},
)
class ChurnService:
    """Churn probability per customer: online features, rollout routing, prediction log."""

    stable = bentoml.models.BentoModel(MANIFEST["stable"])
    if MANIFEST.get("candidate"):
        candidate = bentoml.models.BentoModel(MANIFEST["candidate"])

    def __init__(self) -> None:
        models = {}
        for attr in ("stable", "candidate"):
            if hasattr(type(self), attr):
                model = load_exported(getattr(self, attr).path)
                models[model.version] = model
        default = load_exported(self.stable.path).version
        _RUNTIME["runtime"] = Runtime(SETTINGS, models, default)
        # Long-lived objects (models, libraries) out of the collector's sight, and fewer gen-0 passes:
        # shorter GC pauses in the request path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        log.info("churn_service loaded model versions %s", sorted(models))
        if SETTINGS.serving.api_key is None:
            log.warning(
                "serving.api_key is not set: /rollout answers 403%s",
                " and /predict, /predict_features 401" if SETTINGS.serving.require_api_key else "",
            )

    def __is_ready__(self) -> bool:
        runtime = _RUNTIME.get("runtime")
        return runtime is not None and runtime.ready()[0]

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        runtime = _RUNTIME.pop("runtime", None)
        if runtime is not None:
            runtime.close()  # flushes the prediction log


# /schema.json (what bentoml.SyncHTTPClient / AsyncHTTPClient read) lists the mounted endpoints too.
ChurnService.add_asgi_middleware(
    SchemaWithFastPath, base_schema=ChurnService.schema, routes=fast_path_routes(SETTINGS.serving)
)
