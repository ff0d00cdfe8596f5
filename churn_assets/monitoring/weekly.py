"""The weekly monitoring step of one landing week: drift report and performance report.

Week ``W`` (a landing-week partition key) is monitored through the feature snapshot as of
``W + 7 days`` — the production window scored that week. Weeks before production (history) are
skipped: their snapshots are the training data itself.

* :func:`drift_week` — reference = the champion's training data (``sources.reference_frame``),
  current = the week's feature rows; tests, alert rule, root cause, stored in the drift history.
* :func:`performance_week` — the week's champion predictions (read from the prediction log that
  ``production/batch_scores`` wrote, see :func:`week_predictions`), their CBPE estimate, and the realised
  metrics of every stored prediction week whose 90-day label window (+ report delay) completed by
  the end of ``W`` ("newly labelled predictions").
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from churn_assets.feature_store.definitions import ENTITY
from churn_assets.modeling.training_set import data_end, label_complete_until, label_snapshots
from churn_assets.monitoring import history
from churn_assets.monitoring.drift import (
    DriftReport,
    ReferenceProfile,
    detect_drift,
    profile_reference,
    root_cause,
)
from churn_assets.monitoring.performance import (
    WeekPerformance,
    estimate_performance,
    realised_metrics,
    trend_table,
)
from churn_assets.monitoring.sources import (
    Champion,
    current_window,
    feature_importance,
    load_champion,
    reference_frame,
)
from churn_assets.serving.prediction_log import PREDICTION_LOG_SCHEMA
from churn_assets.settings import Settings
from churn_assets.timeline import WEEK, Timeline

Scorer = Callable[[Champion, pl.DataFrame, dt.date], pl.DataFrame]
# The drift tests of a week on some engine: (profile, current rows, features, importance, segment columns)
# -> (report, the rows the KS tests saw, engine metadata). None = this process (``detect_drift``); the Dask
# engine's is ``churn_assets.compute.drift_stats.drift_detector``.
DriftDetector = Callable[
    [ReferenceProfile, pl.DataFrame, list[str], dict[str, float] | None, list[str]],
    tuple[DriftReport, pl.DataFrame, dict[str, Any]],
]


def score_with_serving_code(champion: Champion, features: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Score ``features`` (``customer_id`` + the champion's features) with the serving code's model."""
    from churn_assets.serving.scoring import ScoringModel, log_rows

    model = ScoringModel(
        champion.name,
        champion.version,
        champion.load(),
        champion.features,
        champion.threshold,
        flavor=champion.flavor,
        semver=champion.semver,
        tags=champion.tags,
    )
    pdf = features.to_pandas()
    return log_rows(model, pdf, pdf[ENTITY].to_numpy(), variant="champion", as_of=as_of)


def week_predictions(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    champion: Champion,
    as_of: dt.date,
    scorer: Scorer = score_with_serving_code,
) -> tuple[pl.DataFrame, int]:
    """The champion's score of every customer of the snapshot as of ``as_of``, and how many were scored here.

    Read from the prediction log: the rows of that as-of date with the champion's version — the live
    service's (``source=http``, the customers who called) and ``production/batch_scores``' (``source=batch``,
    the rest); variant ``champion``, ``shadow`` or ``canary`` (in a rollout the registry champion is the
    candidate) — the newest row per customer. Customers without such a row — a
    canary phase routes most of them to the stable model, and the standalone monitoring path
    (``benchmarks/monitoring_evaluation.py``) runs without batch scoring — are scored here with the same
    serving code, so a week is scored once when production scored it.
    """
    from churn_assets.serving.prediction_log import read_snapshots

    logged = (
        read_snapshots(settings, [as_of])
        .filter(
            pl.col("source").is_in(["http", "batch"])
            & (pl.col("model_version") == champion.version)
            & (pl.col("model_name") == champion.name)
        )
        .unique(subset=[ENTITY], keep="last", maintain_order=True)
    )
    snapshot = current_window(con, as_of, champion.features)
    missing = snapshot.join(logged.select(ENTITY), on=ENTITY, how="anti")
    parts = [logged] if logged.height else []
    if missing.height:
        parts.append(scorer(champion, missing, as_of))
    if not parts:
        return pl.DataFrame(schema=PREDICTION_LOG_SCHEMA), 0
    frame = pl.concat(
        [p.select([pl.col(c).cast(t) for c, t in PREDICTION_LOG_SCHEMA.items()]) for p in parts]
    )
    return frame.sort(ENTITY), missing.height


def production_as_of(timeline: Timeline, week: dt.date) -> dt.date | None:
    """The as-of date monitored for landing week ``week``; None for history weeks."""
    as_of = timeline.snapshot_for_week(week)
    if as_of is None or as_of < timeline.history_end:
        return None
    return as_of


@dataclass
class DriftWeek:
    week: dt.date
    as_of: dt.date
    champion: Champion
    report: DriftReport
    reference: pl.DataFrame
    current: pl.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)
    trend: list[dict[str, Any]] = field(default_factory=list)  # the last weeks of the drift history
    engine: dict[str, Any] = field(default_factory=dict)  # what computed the statistics (compute.engine)


def drift_week(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    timeline: Timeline,
    week: dt.date,
    champion: Champion | None = None,
    detect: DriftDetector | None = None,
) -> DriftWeek | None:
    """Drift of the week's production window against the champion's training data (None: history week).
    ``detect``: the engine that runs the tests (default: this process)."""
    as_of = production_as_of(timeline, week)
    if as_of is None:
        return None
    cfg = settings.monitoring
    t0 = time.perf_counter()
    champion = champion or load_champion(settings)
    reference = reference_frame(settings, champion)
    features = [f for f in champion.features if f in reference.columns]
    t1 = time.perf_counter()
    profile = profile_reference(reference, [f for f in features if f not in cfg.exclude_features])
    t2 = time.perf_counter()
    wanted = list(dict.fromkeys(features + [c for c in cfg.segment_columns if c in reference.columns]))
    current = current_window(con, as_of, wanted)
    t3 = time.perf_counter()
    importance = feature_importance(champion.load(), champion.features)
    engine: dict[str, Any] = {"engine": "local"}
    if detect is not None:  # e.g. per-shard statistics on a Dask cluster; root cause on the rows tested
        report, tested, engine = detect(profile, current, features, importance, list(cfg.segment_columns))
    else:
        report, tested = detect_drift(profile, current, cfg, importance, features=features), current
    report.root_cause = root_cause(
        reference, profile, tested, report, cfg.segment_columns, min_explained=cfg.min_explained
    )
    t4 = time.perf_counter()
    history.save_drift(con, week, as_of, champion.version, report)
    seconds = {"reference": t1 - t0, "profile": t2 - t1, "current": t3 - t2, "tests": t4 - t3}
    runs = history.drift_runs(con).filter(pl.col("week") <= week).tail(8)
    trend = [
        {
            "week": r["week"].isoformat(),
            "model": r["model_version"],
            "drifted": r["n_drifted"],
            "max severity": r["max_severity"],
            "features": ", ".join(json.loads(r["drifted_features"])),
        }
        for r in runs.iter_rows(named=True)
    ]
    return DriftWeek(week, as_of, champion, report, reference, current, seconds, trend, engine)


@dataclass
class PerformanceWeek:
    week: dt.date
    as_of: dt.date
    champion: Champion
    current: WeekPerformance
    newly_labelled: list[WeekPerformance]
    latest_labelled: WeekPerformance | None
    trend: list[dict[str, Any]]
    history: list[WeekPerformance]
    scored_now: int  # customers the monitoring step scored itself (0: all read from the prediction log)
    threshold: float
    predictions_source: str = ""

    @property
    def below_threshold(self) -> bool:
        """Realised AUC of the newest labelled week under the threshold; without labels, the estimate."""
        if self.latest_labelled is not None and self.latest_labelled.auc is not None:
            return self.latest_labelled.auc < self.threshold
        return self.current.estimated_auc < self.threshold

    @property
    def basis(self) -> str:
        return "realised" if self.latest_labelled is not None else "estimated"

    def metadata(self) -> dict[str, Any]:
        """The keys of the monitoring contract (docs/monitoring.md) plus context."""
        out: dict[str, Any] = {
            "estimated_auc": float(self.current.estimated_auc),
            "below_threshold": bool(self.below_threshold),
            "below_threshold_basis": self.basis,
            "auc_threshold": self.threshold,
            "model_version": self.champion.version,
            "as_of": self.as_of.isoformat(),
            "prediction_rows": self.current.rows,
            "labelled_rows": 0,
        }
        if self.latest_labelled is not None and self.latest_labelled.auc is not None:
            out["auc"] = float(self.latest_labelled.auc)
            out["labelled_rows"] = int(self.latest_labelled.rows)
            out["labelled_week"] = self.latest_labelled.week
            out["labelled_model_version"] = self.latest_labelled.model_version
            out["labelled_estimated_auc"] = float(self.latest_labelled.estimated_auc)
        out["newly_labelled_weeks"] = [w.week for w in self.newly_labelled]
        return out


def _week_row(week: dt.date, as_of: dt.date, preds: pl.DataFrame, threshold: float) -> WeekPerformance:
    est = estimate_performance(preds.get_column("score").to_numpy(), threshold)
    return WeekPerformance(
        week=week.isoformat(),
        as_of=as_of.isoformat(),
        model_version=str(preds.get_column("model_version")[0]),
        rows=preds.height,
        estimated_auc=est["auc"],
        estimated_recall=est["recall"],
        estimated_precision=est["precision"],
        estimated_f1=est["f1"],
    )


def performance_week(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    timeline: Timeline,
    week: dt.date,
    champion: Champion | None = None,
    scorer: Scorer = score_with_serving_code,
) -> PerformanceWeek | None:
    """Predictions + CBPE of the week, realised metrics of newly labelled weeks (None: history week)."""
    as_of = production_as_of(timeline, week)
    if as_of is None:
        return None
    champion = champion or load_champion(settings)
    history.ensure_schema(con)
    preds = history.predictions(con, as_of, variant=None, model_version=champion.version)
    scored_now = 0
    source = "monitoring store (an earlier run of this week)"
    if preds.height == 0:
        preds, scored_now = week_predictions(settings, con, champion, as_of, scorer)
        history.save_predictions(con, preds)
        logged = preds.height - scored_now
        source = (
            f"prediction log ({logged} rows of production/batch_scores)"
            + (f" + {scored_now} scored by monitoring" if scored_now else "")
            if logged
            else f"scored by monitoring ({scored_now} rows; no batch scores logged for the week)"
        )
    if preds.height == 0:
        raise ValueError(f"week {week}: the feature snapshot as of {as_of} holds no customers to evaluate")
    threshold = float(preds.get_column("threshold")[0])
    known = {(w.week, w.model_version): w for w in history.performance_history(con)}
    current = _week_row(week, as_of, preds, threshold)
    previous = known.get((current.week, current.model_version))
    if previous is not None and previous.labelled:  # keep realised values of a recomputed week
        current.auc, current.recall, current.precision, current.f1 = (
            previous.auc, previous.recall, previous.precision, previous.f1,
        )  # fmt: skip
        current.positives = previous.positives
    history.save_performance(con, current)
    known[(current.week, current.model_version)] = current

    # Labels: everything landed up to the end of this week (never beyond, so a rerun is repeatable).
    landed = data_end(con)
    end = min(week + WEEK, landed) if landed is not None else None
    sim = settings.simulation
    delay = 7 * sim.label_delay_weeks
    newly: list[WeekPerformance] = []
    if end is not None:
        for row in sorted(known.values(), key=lambda w: w.as_of):
            d = dt.date.fromisoformat(row.as_of)
            if row.labelled or label_complete_until(d, timeline.label_horizon_days, delay) > end:
                continue
            stored = history.predictions(con, d, variant=None, model_version=row.model_version)
            if stored.height == 0:
                continue
            labels = pl.from_pandas(
                label_snapshots(con, [d], timeline.label_horizon_days, report_delay_days=delay, end=end)[
                    ["customer_id", "churned"]
                ]
            )
            joined = stored.join(labels, on="customer_id", how="inner")
            metrics = realised_metrics(
                joined.get_column("churned").to_numpy(),
                joined.get_column("score").to_numpy(),
                row_threshold(stored),
            )
            row.auc, row.recall, row.precision, row.f1 = (
                metrics["auc"], metrics["recall"], metrics["precision"], metrics["f1"],
            )  # fmt: skip
            row.positives = int(joined.get_column("churned").sum())
            history.save_performance(con, row, labelled_in_week=week)
            newly.append(row)
    rows = history.performance_history(con)
    labelled = [
        w
        for w in rows
        if w.labelled
        and end is not None
        and label_complete_until(dt.date.fromisoformat(w.as_of), timeline.label_horizon_days, delay) <= end
    ]
    latest = max(labelled, key=lambda w: w.as_of) if labelled else None
    cfg = settings.monitoring
    trend = trend_table([w for w in rows if w.week <= week.isoformat()], cfg.auc_threshold, cfg.decay_warning)
    return PerformanceWeek(
        week, as_of, champion, current, newly, latest, trend, rows, scored_now, cfg.auc_threshold, source
    )


def row_threshold(preds: pl.DataFrame) -> float:
    value = float(preds.get_column("threshold")[0])
    if math.isnan(value):
        raise ValueError("predictions: threshold is NaN")
    return value
