"""Monitoring history in the DuckDB warehouse (schema ``monitoring``), kept for trends.

Tables (one row per week and feature / week, replaced when a week is recomputed):

* ``monitoring.drift_history`` — every feature test of every week: statistic, p-value, drift score
  (effect), PSI, null shares, drifted, severity, the champion's importance of the feature.
* ``monitoring.drift_runs`` — one row per week: tested / drifted counts, drifted features (JSON),
  max severity, the Bonferroni alpha, the root-cause hint (JSON).
* ``monitoring.predictions`` — the champion's predictions of each monitored week in the prediction-log
  columns, as the performance report evaluated them (read from the prediction log, see
  ``weekly.week_predictions``), kept for the realised metrics once the week's labels complete.
* ``monitoring.performance_history`` — one row per prediction week and model version: the CBPE
  estimate, and the realised metrics once the week's labels are complete (``labelled_in_week``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import duckdb
import polars as pl

from churn_assets.monitoring.drift import DriftReport
from churn_assets.monitoring.performance import WeekPerformance

SCHEMA = "monitoring"
DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.drift_history (
        week DATE NOT NULL, as_of DATE NOT NULL, model_version VARCHAR NOT NULL, feature VARCHAR NOT NULL,
        kind VARCHAR, test VARCHAR, statistic DOUBLE, p_value DOUBLE, effect DOUBLE, psi DOUBLE,
        n_reference BIGINT, n_current BIGINT, null_share_reference DOUBLE, null_share_current DOUBLE,
        drifted BOOLEAN, severity VARCHAR, importance DOUBLE, importance_rank INTEGER, computed_at TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.drift_runs (
        week DATE NOT NULL, as_of DATE NOT NULL, model_version VARCHAR NOT NULL, n_tested INTEGER,
        n_drifted INTEGER, drifted_features VARCHAR, max_severity VARCHAR, alpha_adjusted DOUBLE,
        n_reference BIGINT, n_current BIGINT, root_cause VARCHAR, computed_at TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.predictions (
        ts TIMESTAMPTZ, request_id VARCHAR, customer_id BIGINT, model_name VARCHAR, model_version VARCHAR,
        variant VARCHAR, score DOUBLE, label TINYINT, threshold DOUBLE, latency_ms DOUBLE,
        feature_hash VARCHAR, source VARCHAR, as_of DATE)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.performance_history (
        week DATE NOT NULL, as_of DATE NOT NULL, model_version VARCHAR NOT NULL, rows BIGINT,
        estimated_auc DOUBLE, estimated_recall DOUBLE, estimated_precision DOUBLE, estimated_f1 DOUBLE,
        auc DOUBLE, recall DOUBLE, precision DOUBLE, f1 DOUBLE, positives BIGINT,
        labelled_in_week DATE, computed_at TIMESTAMP)""",
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


TABLES = ("drift_history", "drift_runs", "predictions", "performance_history")


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the monitoring tables when missing (a no-op on a read-only connection that has them)."""
    con.execute("SET TimeZone = 'UTC'")
    [(present,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name IN ?",
        [SCHEMA, list(TABLES)],
    ).fetchall()
    if present == len(TABLES):
        return
    for statement in DDL:
        con.execute(statement)


def _insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    view = f"_frame_{uuid.uuid4().hex}"
    con.register(view, frame.to_arrow())
    try:
        cols = ", ".join(frame.columns)
        con.execute(f"INSERT INTO {SCHEMA}.{table} ({cols}) SELECT {cols} FROM {view}")
    finally:
        con.unregister(view)


# ------------------------------------------------------------------------------------ drift
def save_drift(
    con: duckdb.DuckDBPyConnection, week: dt.date, as_of: dt.date, model_version: str, report: DriftReport
) -> None:
    """Replace the week's drift rows by ``report``."""
    ensure_schema(con)
    now = _now()
    rows = pl.DataFrame(report.records()).with_columns(
        week=pl.lit(week), as_of=pl.lit(as_of), model_version=pl.lit(model_version), computed_at=pl.lit(now)
    )
    summary = report.summary()
    run = pl.DataFrame(
        {
            "week": [week],
            "as_of": [as_of],
            "model_version": [model_version],
            "n_tested": [summary["n_tested"]],
            "n_drifted": [summary["n_drifted_features"]],
            "drifted_features": [json.dumps(summary["drifted_features"])],
            "max_severity": [summary["max_severity"]],
            "alpha_adjusted": [summary["alpha_adjusted"]],
            "n_reference": [summary["n_reference"]],
            "n_current": [summary["n_current"]],
            "root_cause": [json.dumps(summary["root_cause"], default=str)],
            "computed_at": [now],
        }
    )
    con.begin()
    try:
        con.execute(f"DELETE FROM {SCHEMA}.drift_history WHERE week = ?", [week])
        con.execute(f"DELETE FROM {SCHEMA}.drift_runs WHERE week = ?", [week])
        _insert_frame(con, "drift_history", rows)
        _insert_frame(con, "drift_runs", run)
    except BaseException:
        con.rollback()
        raise
    con.commit()


def drift_history(con: duckdb.DuckDBPyConnection, feature: str | None = None) -> pl.DataFrame:
    ensure_schema(con)
    where = "WHERE feature = $f" if feature else ""
    return con.sql(
        f"SELECT * FROM {SCHEMA}.drift_history {where} ORDER BY week, feature",
        params={"f": feature} if feature else None,
    ).pl()


def drift_runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    ensure_schema(con)
    return con.sql(f"SELECT * FROM {SCHEMA}.drift_runs ORDER BY week").pl()


# ------------------------------------------------------------------------------------ predictions
def save_predictions(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> int:
    """Replace the stored predictions of the frame's (as_of, model_version, variant) combinations."""
    ensure_schema(con)
    if frame.height == 0:
        return 0
    keys = frame.select("as_of", "model_version", "variant").unique().rows()
    con.begin()
    try:
        for as_of, version, variant in keys:
            con.execute(
                f"DELETE FROM {SCHEMA}.predictions WHERE as_of = ? AND model_version = ? AND variant = ?",
                [as_of, version, variant],
            )
        _insert_frame(con, "predictions", frame)
    except BaseException:
        con.rollback()
        raise
    con.commit()
    return frame.height


def predictions(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    variant: str | None = "champion",
    model_version: str | None = None,
) -> pl.DataFrame:
    """Stored predictions as of ``as_of`` (``variant`` None: every variant)."""
    ensure_schema(con)
    params: dict[str, Any] = {"d": as_of}
    extra = ""
    if variant is not None:
        extra, params["v"] = " AND variant = $v", variant
    if model_version is not None:
        extra, params["m"] = extra + " AND model_version = $m", model_version
    return con.sql(
        f"SELECT * FROM {SCHEMA}.predictions WHERE as_of = $d{extra} ORDER BY customer_id",
        params=params,
    ).pl()


# ------------------------------------------------------------------------------------ performance
def save_performance(
    con: duckdb.DuckDBPyConnection, row: WeekPerformance, labelled_in_week: dt.date | None = None
) -> None:
    """Insert or replace the row of (week, model_version)."""
    ensure_schema(con)
    data = row.to_dict()
    data["week"] = dt.date.fromisoformat(data["week"])
    data["as_of"] = dt.date.fromisoformat(data["as_of"])
    frame = pl.DataFrame(
        {
            **{k: [v] for k, v in data.items()},
            "labelled_in_week": [labelled_in_week],
            "computed_at": [_now()],
        },
        schema_overrides={
            "week": pl.Date,
            "as_of": pl.Date,
            "labelled_in_week": pl.Date,
            "auc": pl.Float64,
            "recall": pl.Float64,
            "precision": pl.Float64,
            "f1": pl.Float64,
            "positives": pl.Int64,
        },
    )
    con.begin()
    try:
        con.execute(
            f"DELETE FROM {SCHEMA}.performance_history WHERE week = ? AND model_version = ?",
            [data["week"], row.model_version],
        )
        _insert_frame(con, "performance_history", frame)
    except BaseException:
        con.rollback()
        raise
    con.commit()


def performance_history(con: duckdb.DuckDBPyConnection) -> list[WeekPerformance]:
    ensure_schema(con)
    frame = con.sql(f"SELECT * FROM {SCHEMA}.performance_history ORDER BY week, model_version").pl()
    fields = WeekPerformance.__dataclass_fields__
    out = []
    for rec in frame.iter_rows(named=True):
        values = {k: rec[k] for k in fields}
        values["week"] = rec["week"].isoformat()
        values["as_of"] = rec["as_of"].isoformat()
        out.append(WeekPerformance(**values))
    return out
