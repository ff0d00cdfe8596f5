"""Batch scoring of a production week with the champion, in the prediction-log schema.

The performance report calls :func:`score_week` exactly once. Production weeks are also scored by
``production/batch_scores`` through ``churn_assets/serving/scoring.py`` (the service's code); moving
the performance report onto those rows, so a week is scored once, is open work (docs/monitoring.md).

Rows follow the prediction log's schema (``PREDICTION_LOG_SCHEMA``) (``ts, request_id, customer_id, model_name,
model_version, variant, score, label, threshold, latency_ms, feature_hash, source, as_of``):
``ts`` is the as-of midnight (UTC), ``variant`` ``champion``, ``source`` ``batch``, ``latency_ms``
the batch's wall time per row.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import polars as pl

from churn_assets.modeling.training_set import categorical_features
from churn_assets.monitoring.sources import Champion
from churn_assets.serving.prediction_log import PREDICTION_LOG_SCHEMA


def model_frame(features: pl.DataFrame, names: list[str]):  # type: ignore[no-untyped-def]
    """The pandas frame a registered model expects: its feature columns, strings as ``category``."""
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise KeyError(f"feature frame lacks the model's feature column(s) {missing}")
    frame = features.select(names).to_pandas()
    for col in set(categorical_features()) & set(names):
        frame[col] = frame[col].astype("category")
    return frame


def score_week(champion: Champion, features: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Score every row of ``features`` (``customer_id`` + the champion's features) as of ``as_of``."""
    model = champion.load()
    started = time.perf_counter()
    X = model_frame(features, champion.features)
    scores = np.asarray(model.predict_proba(X))[:, 1].astype(np.float64) if len(X) else np.array([])
    per_row_ms = 1000 * (time.perf_counter() - started) / max(len(X), 1)
    ids = features.get_column("customer_id").cast(pl.Int64)
    hashes = features.select(champion.features).hash_rows(seed=0).cast(pl.String)
    ts = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {
            "ts": [ts] * len(ids),
            "request_id": [f"batch-{as_of.isoformat()}-{c}" for c in ids.to_list()],
            "customer_id": ids,
            "model_name": champion.name,
            "model_version": champion.version,
            "variant": "champion",
            "score": scores,
            "label": (scores >= champion.threshold).astype(np.int8),
            "threshold": champion.threshold,
            "latency_ms": per_row_ms,
            "feature_hash": hashes,
            "source": "batch",
            "as_of": as_of,
        }
    )
    return frame.select([pl.col(c).cast(t) for c, t in PREDICTION_LOG_SCHEMA.items()])
