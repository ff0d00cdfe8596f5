"""The weekly production flow as plain functions: batch scoring into the prediction log, label status.

**Production weeks are scored in batch with the serving code**: :func:`score_snapshot` loads the
registered versions through ``churn_assets.serving.scoring`` (the same ``ScoringModel`` the BentoML
service uses), routes customers with ``churn_assets.serving.rollout.route`` (the service's hash) and
writes the rows to the prediction log (``serving.prediction_log.write_predictions``, ``source="batch"``).
Which rows:

* every customer of the week's feature snapshot gets a ``champion`` row from the stable version, except
  the customers a canary phase routes to the candidate, who get a ``canary`` row from the candidate;
* in ``shadow`` the candidate also scores every customer, logged as ``shadow`` (never acted on).

``ts`` of a batch row is the snapshot's as-of date (simulated time, midnight UTC), so a week's
predictions are ``read_predictions(settings, as_of, as_of + 7 days)``; ``latency_ms`` is the batch's
scoring time per row.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.modeling.training_set import label_complete_until, labelled_snapshot_dates
from churn_assets.timeline import Timeline

ScoringLoader = Callable[[str], Any]  # version -> churn_assets.serving.scoring.ScoringModel


@dataclass(frozen=True)
class BatchScores:
    as_of: dt.date
    frame: pl.DataFrame  # prediction-log rows
    stable_version: str | None
    candidate_version: str | None
    phase: str
    seconds: float

    def counts(self) -> dict[str, int]:
        if self.frame.is_empty():
            return {}
        return {
            str(r["variant"]): int(r["len"])
            for r in self.frame.group_by("variant").len().iter_rows(named=True)
        }


def snapshot_features(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Every customer of the snapshot as of ``as_of`` with its point-in-time features."""
    entity = con.sql(
        f"SELECT DISTINCT {ENTITY}, CAST({EVENT_TIMESTAMP} AS TIMESTAMP) AS {EVENT_TIMESTAMP} "
        f"FROM features.customer_account WHERE CAST({EVENT_TIMESTAMP} AS DATE) = $d ORDER BY {ENTITY}",
        params={"d": as_of},
    ).pl()
    if entity.is_empty():
        return entity
    entity = entity.with_columns(pl.col(EVENT_TIMESTAMP).cast(pl.Datetime("us")))
    return OfflineStore(con).get_historical_features(entity)


def score_snapshot(
    features: pl.DataFrame,
    as_of: dt.date,
    *,
    phase: str,
    stable_version: str,
    candidate_version: str | None,
    load: ScoringLoader,
    route: Callable[[int], str],
) -> BatchScores:
    """Score one snapshot with the stable model and (per rollout phase) the candidate; see module doc."""
    started = time.perf_counter()
    if features.is_empty():
        empty = pl.DataFrame()
        return BatchScores(as_of, empty, stable_version, candidate_version, phase, 0.0)
    pdf = features.to_pandas()
    ids = pdf[ENTITY].to_numpy()
    stable = load(stable_version)
    active = candidate_version is not None and phase not in ("none", "full")
    if active and phase != "shadow":
        to_candidate = np.array([route(int(i)) == "canary" for i in ids], dtype=bool)
    else:
        to_candidate = np.zeros(len(ids), dtype=bool)
    from churn_assets.serving.scoring import log_rows

    parts = [log_rows(stable, pdf.loc[~to_candidate], ids[~to_candidate], variant="champion", as_of=as_of)]
    if active:
        candidate = load(str(candidate_version))
        if phase == "shadow":
            parts.append(log_rows(candidate, pdf, ids, variant="shadow", as_of=as_of))
        elif to_candidate.any():
            parts.append(
                log_rows(candidate, pdf.loc[to_candidate], ids[to_candidate], variant="canary", as_of=as_of)
            )
    frame = pl.concat([p for p in parts if p.height], how="vertical")
    return BatchScores(as_of, frame, stable_version, candidate_version, phase, time.perf_counter() - started)


def label_status(
    con: duckdb.DuckDBPyConnection,
    timeline: Timeline,
    report_delay_days: int,
    since: dt.date | None,
) -> dict[str, Any]:
    """Labelled rows that arrived after the last training set's newest labelled snapshot ``since``.

    A snapshot's rows are labelled once its whole label window (+ report delay) has landed. Without a
    training set (``since`` None) only production snapshots (as-of >= ``timeline.history_end``) count.
    """
    dates = labelled_snapshot_dates(con, timeline, report_delay_days)
    floor = since if since is not None else timeline.history_end - dt.timedelta(days=1)
    new_dates = [d for d in dates if d > floor]
    rows = 0
    if new_dates:
        [(rows,)] = con.execute(
            f"SELECT count(*) FROM features.customer_account WHERE CAST({EVENT_TIMESTAMP} AS DATE) "
            "IN (SELECT unnest($dates::DATE[]))",
            {"dates": new_dates},
        ).fetchall()
    newest = dates[-1] if dates else None
    return {
        "new_labelled_rows": int(rows),
        "new_labelled_snapshots": [d.isoformat() for d in new_dates],
        "newest_labelled_as_of": newest.isoformat() if newest else "none",
        "since": since.isoformat() if since else "none (no training set yet)",
    }


def realised_outcomes(
    con: duckdb.DuckDBPyConnection, timeline: Timeline, report_delay_days: int, as_of_dates: Sequence[dt.date]
) -> pl.DataFrame:
    """``customer_id, as_of, churned`` for the given snapshot dates whose label window is complete."""
    from churn_assets.modeling.training_set import data_end, label_snapshots

    end = data_end(con)
    complete = [
        d
        for d in sorted(set(as_of_dates))
        if end is not None and label_complete_until(d, timeline.label_horizon_days, report_delay_days) <= end
    ]
    if not complete:
        return pl.DataFrame(schema={"customer_id": pl.Int64, "as_of": pl.Date, "churned": pl.Int8})
    frame = label_snapshots(
        con, complete, timeline.label_horizon_days, report_delay_days=report_delay_days, on_incomplete="drop"
    )
    return pl.from_pandas(frame[[ENTITY, "as_of", "churned"]]).with_columns(
        pl.col("as_of").cast(pl.Date), pl.col("churned").cast(pl.Int8)
    )
