"""Prometheus metrics of the HTTP fast path.

Created through ``metrics_module`` — ``bentoml.metrics`` inside the service (they then appear on
BentoML's ``/metrics``, multiprocess-safe), ``prometheus_client`` elsewhere — once per module and
process (:func:`metrics_for`): a second app in the same process reuses them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

# The latency SLOs (``serving.slo_latency_p95_ms`` 45 ms, ``slo_latency_p99_ms`` 120 ms) are bucket bounds, so
# the Prometheus alerts on histogram_quantile compare at an exact boundary, not inside an interpolated
# bucket (tests/deploy/test_prometheus.py checks it).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.045, 0.08, 0.12, 0.16, 0.32, 0.64, 1.28, 5.0)


class Metrics:
    def __init__(self, module: Any) -> None:
        self._latency: dict[tuple[str, str, str], Any] = {}
        self._predictions: dict[tuple[str, str], Any] = {}
        self._in_progress: dict[str, Any] = {}
        self.latency = module.Histogram(
            "churn_request_seconds",
            "Request latency by endpoint, model version and variant.",
            ["endpoint", "model_version", "variant"],
            buckets=LATENCY_BUCKETS,
        )
        self.member_latency = module.Histogram(
            "churn_member_seconds",
            "Scoring time of each member of an ensemble model version, per request batch.",
            ["model_version", "member"],
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
        self.shadow_dropped = module.Counter(
            "churn_shadow_dropped",
            "Shadow predictions not made because the worker's shadow queue was full "
            "(serving.shadow_queue_size).",
        )
        self.rate_limited = module.Counter(
            "churn_rate_limited", "Requests rejected by the per-customer limit."
        )
        self.disconnects = module.Counter(
            "churn_client_disconnects",
            "Requests whose client went away before their work committed (nothing returned or logged), by "
            "endpoint and stage.",
            ["endpoint", "stage"],
        )
        self.in_progress = (
            module.Gauge(
                "churn_requests_in_progress",
                "Requests the fast path is handling, by endpoint.",
                ["endpoint"],
                multiprocess_mode="livesum",
            )
            if _accepts_multiprocess(module)
            else module.Gauge(
                "churn_requests_in_progress", "Requests the fast path is handling, by endpoint.", ["endpoint"]
            )
        )
        self.rate_limit_degraded = _gauge(
            module,
            "churn_rate_limit_degraded",
            "1 while the rate limiter's shared store is unavailable (fallback per "
            "serving.rate_limit_on_store_failure), else 0.",
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

        # The start of the oldest live worker: the service's uptime (serving.service_metrics).
        self.started = (
            module.Gauge(
                "churn_service_started_timestamp_seconds",
                "Start time of the service's oldest live worker (Unix seconds).",
                multiprocess_mode="livemin",
            )
            if _accepts_multiprocess(module)
            else module.Gauge(
                "churn_service_started_timestamp_seconds", "Start time of the service (Unix seconds)."
            )
        )
        self.started.set(time.time())

    def latency_of(self, endpoint: str, version: str, variant: str) -> Any:
        """The latency histogram's child of these labels (looked up once per label set)."""
        key = (endpoint, version, variant)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.latency.labels(endpoint, version, variant)
        return child

    def in_progress_of(self, endpoint: str) -> Any:
        """The in-progress gauge's child of ``endpoint`` (looked up once)."""
        child = self._in_progress.get(endpoint)
        if child is None:
            child = self._in_progress[endpoint] = self.in_progress.labels(endpoint)
        return child

    def predictions_of(self, version: str, variant: str) -> Any:
        """The predictions counter's child of these labels (looked up once per label set)."""
        child = self._predictions.get((version, variant))
        if child is None:
            child = self._predictions[version, variant] = self.predictions.labels(version, variant)
        return child


_METRICS: dict[str, Metrics] = {}


def _gauge(module: Any, name: str, doc: str) -> Any:
    """A gauge that, across the service's worker processes, reports the maximum of the workers' values."""
    if _accepts_multiprocess(module):
        return module.Gauge(name, doc, multiprocess_mode="max")
    return module.Gauge(name, doc)


def _accepts_multiprocess(module: Any) -> bool:
    return getattr(module, "__name__", "") == "bentoml.metrics"


def metrics_for(module: Any = None) -> Metrics:
    """The :class:`Metrics` registered with ``module`` (default ``prometheus_client``)."""
    if module is None:
        import prometheus_client as module
    key = getattr(module, "__name__", str(id(module)))
    if key not in _METRICS:
        _METRICS[key] = Metrics(module)
    return _METRICS[key]


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def own_multiprocess_dir(bentoml_home: Path) -> Path | None:
    """Give this BentoML server a Prometheus multiprocess folder of its own; call it where the service
    module is imported. Returns the folder, or None in a worker process (it uses its server's folder).

    BentoML keeps the metric files of a server's workers in ``<BENTOML_HOME>/prometheus_multiproc_dir``
    and empties that folder when a server starts, so a second server started from the same home (another
    port, a second ``churnops serve``) would silently wipe the metrics of one already running: its
    ``/metrics`` stops showing what its workers count. In the server process (before BentoML has set
    ``PROMETHEUS_MULTIPROC_DIR`` for its workers) this points BentoML at
    ``<bentoml_home>/prometheus_multiproc/<pid>`` and removes the folders of servers no longer running.
    """
    if os.environ.get(MULTIPROC_ENV):
        return None
    from bentoml._internal.configuration.containers import BentoMLContainer

    root = bentoml_home / "prometheus_multiproc"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale.name.isdigit() and not _running(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = root / str(os.getpid())
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    return folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True
