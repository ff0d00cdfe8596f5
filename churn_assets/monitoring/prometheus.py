"""Model-quality gauges for Prometheus: written by the weekly monitoring step, served by an exporter.

The serving metrics (latency, errors, breaker, ...) come from the churn service's ``/metrics``. The
model's quality is not a property of a request: the weekly monitoring step (a batch job) computes it. So
that step writes the newest values from the monitoring history to ``settings.monitoring_metrics_path``
in the Prometheus text format (``prometheus_client.write_to_textfile``: a temporary file renamed into
place, so a reader never sees half a file), and ``churnops metrics serve`` (:func:`serve`) exposes that
file on its own ``/metrics``, read afresh on every scrape. Where a node exporter runs, its textfile
collector can read the same file instead. The quality alerts then neither depend on the service being
up nor repeat once per service replica and worker.

Gauges (each with the ``model_version`` the value belongs to):

* ``churn_model_auc`` — realised AUC of the newest prediction week whose 90-day labels completed
  (absent until one has);
* ``churn_model_estimated_auc`` — label-free CBPE estimate of the newest monitored week;
* ``churn_drifted_features`` — features that drifted in the newest monitored week;
* ``churn_monitoring_week_timestamp_seconds`` — Monday of the newest monitored week (``kind`` =
  ``performance`` / ``drift``), ``churn_monitoring_written_timestamp_seconds`` — when the file was written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from churn_assets.monitoring import history
from churn_assets.settings import Settings

AUC = "churn_model_auc"
ESTIMATED_AUC = "churn_model_estimated_auc"
DRIFTED_FEATURES = "churn_drifted_features"
WEEK_TIMESTAMP = "churn_monitoring_week_timestamp_seconds"
WRITTEN_TIMESTAMP = "churn_monitoring_written_timestamp_seconds"


@dataclass(frozen=True)
class QualitySnapshot:
    """The newest model-quality figures of the monitoring history (None: not computed yet)."""

    estimated: tuple[dt.date, str, float] | None  # (week, model version, CBPE AUC)
    realised: tuple[dt.date, str, float] | None  # (prediction week, model version, realised AUC)
    drift: tuple[dt.date, str, int] | None  # (week, model version, drifted features)

    @property
    def empty(self) -> bool:
        return self.estimated is None and self.realised is None and self.drift is None


def _epoch(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def quality_snapshot(con: duckdb.DuckDBPyConnection) -> QualitySnapshot:
    """The newest estimated AUC, realised AUC and drift count stored in the ``monitoring`` schema."""
    history.ensure_schema(con)
    schema = history.SCHEMA
    est = con.execute(
        f"SELECT week, model_version, estimated_auc FROM {schema}.performance_history "
        "WHERE estimated_auc IS NOT NULL AND NOT isnan(estimated_auc) "
        "ORDER BY week DESC, computed_at DESC LIMIT 1"
    ).fetchone()
    real = con.execute(
        f"SELECT week, model_version, auc FROM {schema}.performance_history "
        "WHERE auc IS NOT NULL AND NOT isnan(auc) ORDER BY as_of DESC, computed_at DESC LIMIT 1"
    ).fetchone()
    drift = con.execute(
        f"SELECT week, model_version, n_drifted FROM {schema}.drift_runs "
        "ORDER BY week DESC, computed_at DESC LIMIT 1"
    ).fetchone()
    return QualitySnapshot(
        estimated=(est[0], str(est[1]), float(est[2])) if est else None,
        realised=(real[0], str(real[1]), float(real[2])) if real else None,
        drift=(drift[0], str(drift[1]), int(drift[2])) if drift else None,
    )


ESTIMATED_AUC_HELP = "Label-free (CBPE) AUC estimate of the champion's newest monitored week."
AUC_HELP = "Realised AUC of the newest prediction week whose 90-day labels completed."
DRIFTED_FEATURES_HELP = "Features that drifted in the newest monitored week."


def _versioned_gauge(
    registry: CollectorRegistry, name: str, help_text: str, version: str, value: float
) -> None:
    Gauge(name, help_text, ["model_version"], registry=registry).labels(version).set(value)


def registry_of(snapshot: QualitySnapshot, now: dt.datetime | None = None) -> CollectorRegistry:
    """A fresh registry holding the snapshot's gauges (only those with a value)."""
    registry = CollectorRegistry()
    week = Gauge(WEEK_TIMESTAMP, "Monday of the newest monitored week.", ["kind"], registry=registry)
    if snapshot.estimated is not None:
        day, version, value = snapshot.estimated
        _versioned_gauge(registry, ESTIMATED_AUC, ESTIMATED_AUC_HELP, version, value)
        week.labels("performance").set(_epoch(day))
    if snapshot.realised is not None:
        _, version, value = snapshot.realised
        _versioned_gauge(registry, AUC, AUC_HELP, version, value)
    if snapshot.drift is not None:
        day, version, count = snapshot.drift
        _versioned_gauge(registry, DRIFTED_FEATURES, DRIFTED_FEATURES_HELP, version, count)
        week.labels("drift").set(_epoch(day))
    Gauge(WRITTEN_TIMESTAMP, "When the monitoring step wrote these gauges.", registry=registry).set(
        (now or dt.datetime.now(dt.UTC)).timestamp()
    )
    return registry


def write_quality_metrics(settings: Settings, con: duckdb.DuckDBPyConnection) -> Path | None:
    """Write the newest quality gauges to ``settings.monitoring_metrics_path`` (None: no history yet)."""
    snapshot = quality_snapshot(con)
    if snapshot.empty:
        return None
    path = settings.monitoring_metrics_path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_of(snapshot))
    return path


class TextfileCollector(Collector):
    """The metric families of a Prometheus text file, parsed on every scrape (nothing while it is missing).

    A file that does not parse raises, so the scrape fails (``up`` 0 for the exporter) instead of
    silently serving nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise ValueError(f"{self.path}: not in the Prometheus text format ({exc})") from exc
        yield from families


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> tuple[Any, Any]:
    """Serve ``settings.monitoring_metrics_path`` on ``http://host:port/metrics`` (a daemon thread).

    Returns ``(server, thread)`` from ``prometheus_client.start_http_server``; ``server.shutdown()`` stops it.
    """
    registry = CollectorRegistry()
    registry.register(TextfileCollector(settings.monitoring_metrics_path))
    return start_http_server(
        port if port is not None else settings.monitoring.metrics_port,
        addr=host or settings.monitoring.metrics_host,
        registry=registry,
    )
