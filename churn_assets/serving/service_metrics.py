"""The live service's own view of a production week, read from its Prometheus ``/metrics``.

The traffic replayer (``serving.traffic``) measures what the client saw; this module reads what the
service counted: :func:`scrape` takes one snapshot of ``/metrics`` (``prometheus_client``'s text parser),
and :func:`service_window` turns the difference of two snapshots — before and after the week's replay —
into the week's server-side figures:

* requests to ``/predict`` (``churn_request_seconds_count``), error responses by status
  (``churn_errors_total``) and the error rate;
* latency P50/P95/P99 from the histogram's bucket counts, interpolated inside a bucket as Prometheus'
  ``histogram_quantile`` does, over all versions and per ``variant vVERSION``;
* the service's uptime at the end of the window (``churn_service_started_timestamp_seconds``: the start
  of its oldest live worker).

Counters restart at 0 when the service restarts; a window in which any counter went down is reported
from the second snapshot alone and says so (``restarted``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ENDPOINT = "predict"
LATENCY = "churn_request_seconds"
ERRORS = "churn_errors"
STARTED = "churn_service_started_timestamp_seconds"


@dataclass(frozen=True)
class MetricsSnapshot:
    """Cumulative ``/predict`` counts of one scrape, by ``variant vVERSION``."""

    at: float  # time.time() of the scrape
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # label -> {le: cumulative count}
    counts: dict[str, float] = field(default_factory=dict)  # label -> requests
    errors: dict[str, float] = field(default_factory=dict)  # status -> error responses
    started: float | None = None  # oldest live worker's start (epoch seconds)


def parse(text: str, at: float | None = None) -> MetricsSnapshot:
    """A :class:`MetricsSnapshot` of a ``/metrics`` page (the Prometheus text format)."""
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    counts: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    started: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name == LATENCY:
            for s in family.samples:
                if s.labels.get("endpoint") != ENDPOINT:
                    continue
                label = f"{s.labels.get('variant', 'none')} v{s.labels.get('model_version', 'none')}"
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets[label][le] = buckets[label].get(le, 0.0) + s.value
                elif s.name.endswith("_count"):
                    counts[label] += s.value
        elif family.name == ERRORS:
            for s in family.samples:
                if s.name.endswith("_total") and s.labels.get("endpoint") == ENDPOINT:
                    errors[s.labels.get("status", "?")] += s.value
        elif family.name == STARTED:
            values = [s.value for s in family.samples if s.value > 0]
            started = min(values) if values else None
    return MetricsSnapshot(at or time.time(), dict(buckets), dict(counts), dict(errors), started)


def scrape(url: str, timeout: float = 2.0) -> MetricsSnapshot | None:
    """One snapshot of ``{url}/metrics``; None when the service does not answer (the week then has no
    server-side figures, and says so)."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse(response.text)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` of cumulative ``{upper bound: count}`` buckets (seconds): linear
    interpolation inside the bucket that holds the rank; the highest finite bound when the rank falls in
    the ``+Inf`` bucket; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _minus(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def service_window(before: MetricsSnapshot | None, after: MetricsSnapshot) -> dict[str, Any]:
    """The server-side figures of the window between two scrapes (see the module doc)."""
    restarted = (
        before is None
        or any(after.counts.get(k, 0.0) < v for k, v in before.counts.items())
        or any(after.errors.get(k, 0.0) < v for k, v in before.errors.items())
    )
    base = MetricsSnapshot(after.at) if restarted or before is None else before
    counts = {k: v for k, v in _minus(after.counts, base.counts).items() if v > 0}
    buckets = {k: _minus(v, base.buckets.get(k, {})) for k, v in after.buckets.items() if k in counts}
    errors = {k: int(v) for k, v in _minus(after.errors, base.errors).items() if v > 0}
    merged: dict[float, float] = defaultdict(float)
    for per_label in buckets.values():
        for le, n in per_label.items():
            merged[le] += n
    requests = int(sum(counts.values()))
    n_errors = sum(errors.values())

    def ms(q: float, b: dict[float, float]) -> float | None:
        seconds = histogram_quantile(q, b)
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "requests": requests,
        "errors": n_errors,
        "errors_by_status": errors,
        "error_rate": n_errors / requests if requests else None,
        "latency_p50_ms": ms(0.50, merged),
        "latency_p95_ms": ms(0.95, merged),
        "latency_p99_ms": ms(0.99, merged),
        "by_variant": {
            label: {"requests": int(counts[label]), "latency_p95_ms": ms(0.95, b)}
            for label, b in sorted(buckets.items())
            if not label.startswith("none ")  # error responses carry no model version
        },
        "uptime_seconds": round(after.at - after.started, 1) if after.started else None,
        "window_seconds": None if before is None else round(after.at - before.at, 1),
        "restarted": restarted and before is not None,
    }


__all__ = ["MetricsSnapshot", "histogram_quantile", "parse", "scrape", "service_window"]
