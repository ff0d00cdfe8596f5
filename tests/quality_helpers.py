"""Real monitoring results in a warehouse's ``monitoring`` schema, for the Prometheus quality-gauge tests.

Two monitored weeks of model ``"3"``: week 1 labelled (realised AUC from ``realised_metrics``), week 2 with
only its CBPE estimate; the drift run of week 2 comes from ``detect_drift`` on frames where ``n_shifted``
columns moved by one standard deviation. Every figure is computed by the monitoring code, none typed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from churn_assets.monitoring import history
from churn_assets.monitoring.drift import detect_drift, profile_reference
from churn_assets.monitoring.performance import WeekPerformance, estimate_performance, realised_metrics
from churn_assets.settings import MonitoringSettings

WEEK_1 = dt.date(2025, 1, 6)
WEEK_2 = dt.date(2025, 1, 13)
VERSION = "3"
THRESHOLD = 0.3


@dataclass(frozen=True)
class StoredQuality:
    realised_auc: float  # week 1
    estimated_auc: float  # week 2 (the newest)
    drifted_features: int  # week 2


def _week(week: dt.date, scores: np.ndarray, labels: np.ndarray | None) -> WeekPerformance:
    est = estimate_performance(scores, THRESHOLD)
    row = WeekPerformance(
        week=week.isoformat(),
        as_of=(week + dt.timedelta(days=7)).isoformat(),
        model_version=VERSION,
        rows=len(scores),
        estimated_auc=est["auc"],
        estimated_recall=est["recall"],
        estimated_precision=est["precision"],
        estimated_f1=est["f1"],
    )
    if labels is not None:
        real = realised_metrics(labels, scores, THRESHOLD)
        row.auc, row.recall, row.precision, row.f1 = (
            real["auc"],
            real["recall"],
            real["precision"],
            real["f1"],
        )
        row.positives = int(labels.sum())
    return row


def store_quality_history(con: duckdb.DuckDBPyConnection, n_shifted: int = 3, seed: int = 0) -> StoredQuality:
    rng = np.random.default_rng(seed)
    scores_1 = rng.beta(1.2, 9.0, 4_000)
    labels_1 = (rng.random(4_000) < scores_1).astype(int)  # calibrated: labels ~ Bernoulli(score)
    first = _week(WEEK_1, scores_1, labels_1)
    second = _week(WEEK_2, rng.beta(1.2, 6.0, 4_000), None)
    history.save_performance(con, first, labelled_in_week=WEEK_2)
    history.save_performance(con, second)

    n_ref, n_cur = 20_000, 5_000
    ref = {f"stable_{i}": rng.normal(size=n_ref) for i in range(10)}
    cur = {f"stable_{i}": rng.normal(size=n_cur) for i in range(10)}
    for i in range(n_shifted):
        ref[f"shifted_{i}"] = rng.normal(size=n_ref)
        cur[f"shifted_{i}"] = rng.normal(1.0, 1.0, n_cur)
    reference, current = pl.DataFrame(ref), pl.DataFrame(cur)
    report = detect_drift(profile_reference(reference, reference.columns), current, MonitoringSettings())
    history.save_drift(con, WEEK_2, WEEK_2 + dt.timedelta(days=7), VERSION, report)
    assert first.auc is not None
    return StoredQuality(first.auc, second.estimated_auc, len(report.drifted_features))
