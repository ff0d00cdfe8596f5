"""Monitoring assets (weekly partitions): drift report and performance report of the champion.

Thin wrappers over ``churn_assets.monitoring.weekly``. Sensors read the metadata keys below
(contract in docs/monitoring.md):

* ``monitoring/drift_report``: ``n_drifted_features`` (int), ``drifted_features`` (JSON list),
  ``max_severity`` (NONE | LOW | MEDIUM | HIGH).
* ``monitoring/performance_report``: ``auc`` (realised AUC of the newest week whose labels are
  complete; absent before any), ``estimated_auc`` (CBPE of this week's predictions),
  ``labelled_rows`` (int), ``below_threshold`` (bool; realised when labelled, else estimated —
  ``below_threshold_basis`` says which).
"""

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
import duckdb

from churn_assets.defs.keys import (
    BATCH_SCORES,
    CHAMPION,
    DRIFT_REPORT,
    FEATURE_KEYS,
    MONITORING_GROUP,
    PERFORMANCE_REPORT,
    raw_asset_key,
)
from churn_assets.defs.metadata import markdown_table, png_markdown
from churn_assets.defs.partitions import weekly_partitions
from churn_assets.defs.resources import WarehouseResource
from churn_assets.settings import Settings
from churn_assets.timeline import Timeline

T = TypeVar("T")


def _for_week(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: Settings,
    compute: Callable[[Settings, duckdb.DuckDBPyConnection, Timeline, dt.date], T],
) -> tuple[dt.date, T]:
    """The partition's week and ``compute`` of it over a warehouse connection (monitoring.weekly); then the
    newest quality gauges are rewritten for Prometheus (monitoring.prometheus, docs/monitoring.md)."""
    from churn_assets.monitoring.prometheus import write_quality_metrics

    week = dt.date.fromisoformat(context.partition_key)
    with warehouse.warehouse().connect() as con:
        result = compute(settings, con, Timeline.from_settings(settings.simulation), week)
        if result is not None:
            path = write_quality_metrics(settings, con)
            if path is not None:
                context.log.info(f"quality gauges for Prometheus written to {path}")
        return week, result


def _html_report(warehouse: WarehouseResource, settings: Settings, week: dt.date) -> dict[str, Any]:
    """The week's HTML monitoring report rewritten from the stored state (both weekly monitoring assets
    do it, so it holds whichever ran last too), as path and file URL metadata."""
    from churn_assets.monitoring.html_report import write_weekly_report

    with warehouse.warehouse().connect() as con:
        path = write_weekly_report(settings, con, week)
    return {"report": dg.MetadataValue.path(str(path)), "report_url": dg.MetadataValue.url(path.as_uri())}


def _skipped(week: dt.date) -> dict[str, Any]:
    return {"skipped": f"{week} is a history week (no production snapshot)", "model_version": "none"}


@dg.asset(
    key=DRIFT_REPORT,
    group_name=MONITORING_GROUP,
    partitions_def=weekly_partitions,
    deps=[*FEATURE_KEYS, CHAMPION],
    kinds={"duckdb", "scipy"},
    description=(
        "Data drift of the week's production window (feature snapshot as of the next Monday) against the "
        "champion's training data: KS per numeric feature, chi-square per categorical one; alert when "
        "p < 0.01 / n_features (Bonferroni) AND KS >= 0.1 / PSI >= 0.1. Severity, impact (champion's "
        "importance), root-cause segment, overlay histograms; history in monitoring.drift_history."
    ),
)
def drift_report(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    # monitoring.weekly / plots pull in MLflow, scikit-learn and matplotlib: imported here, not when the
    # code location loads (docs/automation.md, "Where the time goes").
    from churn_assets.compute.drift_stats import drift_detector
    from churn_assets.monitoring import plots
    from churn_assets.monitoring.weekly import drift_week

    detect = drift_detector(settings)  # None: this process; a Dask cluster's per-shard statistics
    week, result = _for_week(context, warehouse, settings, functools.partial(drift_week, detect=detect))
    if result is None:
        return dg.MaterializeResult(
            metadata={"n_drifted_features": 0, "drifted_features": dg.MetadataValue.json([]),
                      "max_severity": "NONE", **_skipped(week)}
        )  # fmt: skip
    report = result.report
    summary = report.summary()
    cfg = settings.monitoring
    context.log.info(
        f"week {week}: {summary['n_drifted_features']} drifted of {summary['n_tested']} "
        f"({', '.join(summary['drifted_features']) or 'none'})"
    )
    metadata: dict[str, Any] = {
        "n_drifted_features": summary["n_drifted_features"],
        "drifted_features": dg.MetadataValue.json(summary["drifted_features"]),
        "max_severity": summary["max_severity"],
        "n_tested": summary["n_tested"],
        "drift_table": dg.MetadataValue.md(markdown_table(report.table(), limit=60)),
        "rule": (
            f"p < {cfg.drift_p_value} / {summary['n_tested']} = {summary['alpha_adjusted']:.2e} AND "
            f"KS >= {cfg.ks_floor} (numeric) / PSI >= {cfg.psi_floor} (categorical)"
        ),
        "root_cause": (report.root_cause or {}).get("hint", "no drift" if not report.drifted else "n/a"),
        "root_cause_ranking": dg.MetadataValue.json((report.root_cause or {}).get("ranking", [])),
        "excluded_features": dg.MetadataValue.json(report.excluded),
        "model_version": result.champion.version,
        "as_of": result.as_of.isoformat(),
        "reference_rows": summary["n_reference"],
        "current_rows": summary["n_current"],
        "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in result.seconds.items()}),
        "drift_trend": dg.MetadataValue.md(markdown_table(result.trend)),
        "engine": str(result.engine.get("engine", "local")),
        **(
            {
                "engine_detail": dg.MetadataValue.json(
                    {k: v for k, v in result.engine.items() if k != "engine"}
                )
            }
            if len(result.engine) > 1
            else {}
        ),
    }
    drifted = report.drifted[: cfg.histogram_features]
    png = plots.drift_histograms(
        result.reference, result.current, drifted, settings.monitoring_dir / "plots" / f"drift_{week}.png"
    )
    if png is not None:
        metadata["histograms"] = png_markdown(png, "Drifted features: reference vs current")
        metadata["histograms_path"] = dg.MetadataValue.path(str(png))
    metadata.update(_html_report(warehouse, settings, week))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=PERFORMANCE_REPORT,
    group_name=MONITORING_GROUP,
    partitions_def=weekly_partitions,
    deps=[*FEATURE_KEYS, raw_asset_key("churn_events"), CHAMPION, BATCH_SCORES],
    kinds={"duckdb", "mlflow"},
    description=(
        "The champion's predictions of the week (read from the prediction log production/batch_scores "
        "wrote; customers it did not score with the champion are scored here with the same serving code), "
        "their label-free AUC estimate (CBPE), and realised AUC / recall / precision / F1 "
        "of every prediction week whose 90-day labels completed this week; trend table vs AUC 0.78."
    ),
)
def performance_report(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.monitoring import plots
    from churn_assets.monitoring.weekly import performance_week

    week, result = _for_week(context, warehouse, settings, performance_week)
    if result is None:
        return dg.MaterializeResult(metadata={"labelled_rows": 0, "below_threshold": False, **_skipped(week)})
    meta = result.metadata()
    context.log.info(
        f"week {week}: estimated AUC {meta['estimated_auc']:.3f}"
        + (f", realised AUC {meta['auc']:.3f} (week {meta['labelled_week']})" if "auc" in meta else "")
    )
    metadata: dict[str, Any] = {
        **{k: v for k, v in meta.items() if k != "newly_labelled_weeks"},
        "newly_labelled_weeks": dg.MetadataValue.json(meta["newly_labelled_weeks"]),
        "trend": dg.MetadataValue.md(markdown_table(result.trend, limit=60)),
        "scored_now": result.scored_now,
        "predictions_source": result.predictions_source,
    }
    png = plots.auc_trend(
        [w for w in result.history if w.week <= week.isoformat()],
        result.threshold,
        settings.monitoring_dir / "plots" / f"auc_{week}.png",
    )
    if png is not None:
        metadata["auc_trend"] = png_markdown(png, "AUC by prediction week")
    metadata.update(_html_report(warehouse, settings, week))
    return dg.MaterializeResult(metadata=metadata)
