"""The spec's "MLOps Status Report", built from stored state only.

:func:`build_status_report` reads the registry (champion, aliases, tags, audit log), the monitoring
history in the warehouse (``monitoring.drift_runs`` / ``drift_history`` / ``performance_history``)
and, when given or available, the prediction log (requests/s and latency percentiles of the
HTTP-served predictions). :func:`render_status` turns the dict into the plain-text report.

Week deployed: the first monitored production week in which the current champion version produced
the reports (the registry's promotion time is wall-clock, not simulated time; both are shown).

The ``action`` section (:func:`action_section`) is the spec's "Action" block: what is being done (a
training/retraining run in progress, retraining triggered by the retrain sensor's rules on this report's
performance and drift, or nothing), its expected completion (the median duration of the finished
``training``/``retraining`` runs: the MLflow parent runs of those Dagster jobs), the validation the run will
use (the holdout window of the next training set, ``training_set.holdout_window``) and the promotion rule
with the bar the challenger must clear.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from typing import Any

import duckdb
import polars as pl

from churn_assets.modeling.names import GATES
from churn_assets.modeling.registry import CHAMPION, PREVIOUS, ModelRegistry
from churn_assets.modeling.tracking import pipeline_runs
from churn_assets.modeling.training_set import holdout_window
from churn_assets.monitoring import history
from churn_assets.monitoring.performance import trend_table
from churn_assets.serving.prediction_log import read_predictions
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline

RETRAINING_JOBS = ("training", "retraining")


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def traffic_stats(log: pl.DataFrame | None) -> dict[str, Any]:
    """Requests/s and latency P50/P95/P99 of a prediction-log frame: the live service's rows (``source``
    http) of the newest snapshot it served when there are any (with a breakdown per variant and model
    version), else every row (batch scoring: time per row)."""
    if log is None or log.height == 0:
        return {"source": "no prediction log", "requests": 0}
    rows = log.filter(pl.col("source") == "http") if "source" in log.columns else log
    source = "http"
    if rows.height == 0:
        rows, source = log, "batch"
    elif "as_of" in rows.columns and rows.get_column("as_of").null_count() < rows.height:
        newest = rows.get_column("as_of").max()
        rows = rows.filter(pl.col("as_of") == newest)
        source = f"http, snapshot {newest!s}"
    span = (rows.get_column("ts").max() - rows.get_column("ts").min()).total_seconds()  # type: ignore[operator, union-attr]
    lat = rows.get_column("latency_ms")
    by = (
        rows.group_by("variant", "model_version")
        .agg(pl.len().alias("n"), pl.col("latency_ms").quantile(0.95).alias("p95"))
        .sort("variant", "model_version")
        if {"variant", "model_version"} <= set(rows.columns)
        else pl.DataFrame()
    )
    return {
        "source": f"prediction log ({source})",
        "requests": rows.height,
        "window_start": str(rows.get_column("ts").min()),
        "window_end": str(rows.get_column("ts").max()),
        "requests_per_second": rows.height / span if span > 0 else None,
        "latency_p50_ms": _num(lat.quantile(0.50)),
        "latency_p95_ms": _num(lat.quantile(0.95)),
        "latency_p99_ms": _num(lat.quantile(0.99)),
        "by_variant": {
            f"{r['variant']} v{r['model_version']}": {"predictions": r["n"], "latency_p95_ms": _num(r["p95"])}
            for r in by.iter_rows(named=True)
        },
    }


def live_traffic_summary(settings: Settings) -> dict[str, Any] | None:
    """The newest production week's replay summary (what the client saw: requests, errors, rate)."""
    from churn_assets.serving.traffic import summaries_dir

    files = sorted(summaries_dir(settings).glob("*.json")) if summaries_dir(settings).exists() else []
    return json.loads(files[-1].read_text()) | {"as_of": files[-1].stem} if files else None


def _champion_section(settings: Settings, registry: ModelRegistry) -> dict[str, Any]:
    mv = registry.version_by_alias(CHAMPION)
    if mv is None:
        return {"version": None}
    tags = dict(mv.tags)
    version = str(mv.version)
    audit = registry.read_audit()
    became = [
        e for e in audit if e.champion_after == version and e.action in ("promoted", "approved", "rollback")
    ]
    previous = registry.version_by_alias(PREVIOUS)
    return {
        "name": registry.name,
        "version": version,
        "semver": tags.get("semver"),
        "test_auc": _num(tags.get("metric.auc")),
        "threshold": _num(tags.get("metric.threshold")),
        "data_sha256": tags.get("data_sha256"),
        "promoted_at": became[-1].at if became else None,
        "previous_version": str(previous.version) if previous is not None else None,
    }


def _monitoring_sections(
    con: duckdb.DuckDBPyConnection, version: str | None, settings: Settings
) -> dict[str, Any]:
    cfg = settings.monitoring
    runs = history.drift_runs(con)
    perf = history.performance_history(con)
    weeks_of_version = sorted(
        {r["week"].isoformat() for r in runs.iter_rows(named=True) if r["model_version"] == version}
        | {w.week for w in perf if w.model_version == version}
    )
    drift: dict[str, Any] = {"week": None}
    if runs.height:
        last = runs.row(runs.height - 1, named=True)
        rows = history.drift_history(con).filter(pl.col("week") == last["week"])
        drifted = rows.filter(pl.col("drifted")).sort("effect", descending=True)
        drift = {
            "week": last["week"].isoformat(),
            "as_of": last["as_of"].isoformat(),
            "model_version": last["model_version"],
            "n_tested": last["n_tested"],
            "n_drifted": last["n_drifted"],
            "max_severity": last["max_severity"],
            "features": [
                {"feature": r["feature"], "score": r["effect"], "severity": r["severity"], "test": r["test"]}
                for r in drifted.iter_rows(named=True)
            ],
            "root_cause": (json.loads(last["root_cause"]) or {}).get("hint") if last["root_cause"] else None,
        }
    labelled = [w for w in perf if w.labelled]
    latest_labelled = max(labelled, key=lambda w: w.as_of) if labelled else None
    latest = max(perf, key=lambda w: w.week) if perf else None
    auc = latest_labelled.auc if latest_labelled else None
    estimate = latest.estimated_auc if latest else None
    basis_value = auc if auc is not None else estimate
    performance = {
        "threshold": cfg.auc_threshold,
        "auc": auc,
        "auc_week": latest_labelled.week if latest_labelled else None,
        "estimated_auc": estimate,
        "estimated_week": latest.week if latest else None,
        "basis": "realised" if auc is not None else ("estimated" if estimate is not None else None),
        "below_threshold": None if basis_value is None else bool(basis_value < cfg.auc_threshold),
        "trend": trend_table(perf, cfg.auc_threshold, cfg.decay_warning)[-8:],
    }
    return {
        "week_deployed": weeks_of_version[0] if weeks_of_version else None,
        "weeks_monitored": len(weeks_of_version),
        "drift": drift,
        "performance": performance,
    }


def retrain_reasons(settings: Settings, performance: dict[str, Any], drift: dict[str, Any]) -> list[str]:
    """The retrain sensor's performance and drift conditions (``automation.triggers``) on this report."""
    cfg = settings.automation
    reasons = []
    auc, estimate = performance.get("auc"), performance.get("estimated_auc")
    if auc is not None and auc < cfg.retrain_auc_threshold:
        reasons.append(f"realised AUC {auc:.3f} below {cfg.retrain_auc_threshold}")
    elif cfg.retrain_on_estimated_auc and estimate is not None and estimate < cfg.retrain_auc_threshold:
        reasons.append(f"estimated AUC {estimate:.3f} below {cfg.retrain_auc_threshold}")
    n = drift.get("n_drifted") or 0
    if n >= cfg.retrain_min_drifted_features:
        worst = drift.get("max_severity")
        reasons.append(f"{n} features drifted" + (f" (max severity {worst})" if worst else ""))
    return reasons


def promotion_rule(settings: Settings, champion_auc: float | None) -> dict[str, Any]:
    """The promotion rule of the next challenger, with the AUC bar the champion's recorded test AUC sets."""
    cfg = settings.modeling
    bar = None if champion_auc is None else champion_auc + cfg.min_auc_gain
    how = (
        "automatic" if cfg.promotion_mode == "auto" else "after manual approval (churnops promote --approve)"
    )
    rule = (
        f"{how} if all {len(GATES)} gates pass and its AUC beats the champion's on the same holdout by more "
        f"than {cfg.min_auc_gain}"
        + (f" (champion's test AUC {champion_auc:.3f}: AUC > {bar:.3f})" if bar is not None else "")
        if champion_auc is not None
        else f"{how} if all {len(GATES)} gates pass (no champion yet)"
    )
    return {
        "mode": cfg.promotion_mode,
        "min_auc_gain": cfg.min_auc_gain,
        "champion_test_auc": champion_auc,
        "min_challenger_auc": bar,
        "gates": list(GATES),
        "rule": rule,
    }


def action_section(
    settings: Settings, report: dict[str, Any], holdout: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """The spec's "Action" block (module docstring) from the report's sections and the past runs."""
    runs = pipeline_runs(settings, RETRAINING_JOBS)
    finished = [r["duration_seconds"] for r in runs if r["status"] == "FINISHED"]
    expected = statistics.median(finished) if finished else None
    running = next((r for r in runs if r["status"] == "RUNNING"), None)
    reasons = retrain_reasons(settings, report["performance"], report["drift"])
    started: dt.datetime | None = None
    if running is not None:
        action, started = f"{running['job']} pipeline running", running["started_at"]
    elif reasons:
        action = (
            "automated retraining pipeline triggered"
            if settings.automation.sensors_running_by_default
            else "retraining recommended (sensors off: churnops train)"
        )
        started = now
    else:
        action = "none: champion within threshold"
    return {
        "action": action,
        "reasons": reasons,
        "started_at": running["started_at"].isoformat(timespec="seconds") if running else None,
        "expected_duration_seconds": expected,
        "expected_completion": (
            (started + dt.timedelta(seconds=expected)).isoformat(timespec="seconds")
            if started is not None and expected is not None
            else None
        ),
        "duration_basis": f"median of {len(finished)} finished {'/'.join(RETRAINING_JOBS)} run(s)",
        "validation": holdout,
        "promotion": promotion_rule(settings, report["model"].get("test_auc")),
    }


def build_status_report(settings: Settings, predictions: pl.DataFrame | None = None) -> dict[str, Any]:
    """Every field read from stored state (see the module docstring); ``predictions``: a prediction-log
    frame to use instead of reading the serving log."""
    registry = ModelRegistry(settings)
    model = _champion_section(settings, registry)
    now = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {"generated_at": now.isoformat(timespec="seconds")}
    holdout: dict[str, Any] = {"split_mode": settings.modeling.split_mode, "error": "no warehouse yet"}
    monitoring: dict[str, Any] = {"week_deployed": None, "weeks_monitored": 0, "drift": {"week": None}}
    monitoring["performance"] = {
        "threshold": settings.monitoring.auc_threshold,
        "auc": None,
        "estimated_auc": None,
    }
    if settings.warehouse_path.exists():
        with Warehouse.of(settings).connect(read_only=True) as con:
            [(tables,)] = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'monitoring'"
            ).fetchall()
            if tables:
                monitoring = _monitoring_sections(con, model.get("version"), settings)
            try:
                holdout = holdout_window(con, Timeline.from_settings(settings.simulation), settings)
            except duckdb.CatalogException as exc:  # no raw or feature tables yet
                holdout = {"split_mode": settings.modeling.split_mode, "error": str(exc).splitlines()[0]}
    model["week_deployed"] = monitoring.pop("week_deployed")
    model["weeks_monitored"] = monitoring.pop("weeks_monitored")
    report["model"] = model
    report.update(monitoring)
    log = predictions if predictions is not None else read_predictions(settings)
    report["traffic"] = traffic_stats(log)
    report["live_traffic"] = live_traffic_summary(settings)
    audit = registry.read_audit()
    last = audit[-1] if audit else None
    report["action_taken"] = (
        {
            "action": last.action,
            "version": last.version,
            "at": last.at,
            "actor": last.actor,
            "reason": last.reason,
        }
        if last
        else None
    )
    reasons = []
    perf = report["performance"]
    if perf.get("below_threshold"):
        reasons.append(f"AUC {perf.get('basis')} below {perf['threshold']}")
    drift = report["drift"]
    if (drift.get("n_drifted") or 0) >= 3:
        reasons.append(f"{drift['n_drifted']} features drifted")
    report["recommendation"] = (
        ("RETRAINING RECOMMENDED: " + "; ".join(reasons)) if reasons else "no action needed"
    )
    report["action"] = action_section(settings, report, holdout, now)
    return report


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_ms(value: float | None) -> str:
    """A latency in ms for the report: one decimal from 1 ms up, two significant digits below (the
    batch log's per-row times are ~0.01 ms, which one decimal would print as 0.0)."""
    if value is None:
        return "—"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2g}"


def render_status(report: dict[str, Any]) -> str:
    """The plain-text MLOps Status Report."""
    bar = "═" * 60
    m, perf, drift, traffic = report["model"], report["performance"], report["drift"], report["traffic"]
    lines = ["MLOPS STATUS REPORT", bar]
    if m.get("version") is None:
        lines.append("Production model: none (no champion registered)")
    else:
        lines += [
            f"Production model: {m['name']} v{m['semver']} (registry version {m['version']}, test AUC {_f(m['test_auc'])})",
            f"Deployed: week {_f(m['week_deployed'])} (promoted {_f(m['promoted_at'])}); "
            f"monitored for {m['weeks_monitored']} week(s); previous version {_f(m['previous_version'])}",
        ]
    status = {True: "BELOW THRESHOLD 🔴", False: "OK ✓", None: "no data"}[perf.get("below_threshold")]
    lines += [
        f"Performance: AUC {_f(perf.get('auc'))} (labelled week {_f(perf.get('auc_week'))}), estimated "
        f"{_f(perf.get('estimated_auc'))} (week {_f(perf.get('estimated_week'))}) vs threshold "
        f"{perf['threshold']} — {status}",
    ]
    if drift.get("week"):
        feats = (
            ", ".join(f"{d['feature']} ({d['severity']}, {d['score']:.3f})" for d in drift["features"])
            or "none"
        )
        lines.append(
            f"Drift (week {drift['week']}): {drift['n_drifted']} of {drift['n_tested']} features — {feats}"
        )
        if drift.get("root_cause"):
            lines.append(f"Root cause: {drift['root_cause']}")
    else:
        lines.append("Drift: no report yet")
    if traffic.get("requests"):
        lines.append(
            f"Traffic ({traffic['source']}): {traffic['requests']:,} requests, "
            f"{_f(traffic.get('requests_per_second'), 1)} req/s, latency P50/P95/P99 "
            + " / ".join(format_ms(traffic.get(f"latency_{p}_ms")) for p in ("p50", "p95", "p99"))
            + " ms"
        )
        if traffic.get("by_variant"):
            lines.append(
                "  by variant: "
                + ", ".join(
                    f"{k} {v['predictions']:,} (P95 {format_ms(v['latency_p95_ms'])} ms)"
                    for k, v in traffic["by_variant"].items()
                )
            )
    else:
        lines.append(f"Traffic: {traffic['source']}")
    live = report.get("live_traffic")
    if live:
        lines.append(
            f"Live traffic (snapshot {live['as_of']}, client side): {live['requests']:,} requests at "
            f"{_f(live.get('requests_per_second'), 1)}/s, {live['errors']} failed "
            f"({', '.join(f'{k}: {v}' for k, v in live.get('errors_by_status', {}).items()) or 'none'}), "
            f"P95 {format_ms(live.get('latency_p95_ms'))} ms"
        )
        service = live.get("service")
        if service:
            rate, up = service.get("error_rate"), service.get("uptime_seconds")
            lines.append(
                f"Live service (its /metrics, same window): {service['requests']:,} requests, error rate "
                f"{'-' if rate is None else f'{rate:.2%}'}, P50/P95/P99 "
                + " / ".join(format_ms(service.get(f"latency_{p}_ms")) for p in ("p50", "p95", "p99"))
                + f" ms, up {'-' if up is None else f'{up / 3600:.2f} h'}"
            )
    act = report.get("action_taken")
    lines.append(
        f"Last action: {act['action']} v{act['version']} by {act['actor']} at {act['at']} — {act['reason']}"
        if act
        else "Last action: none"
    )
    lines.append(f"Recommendation: {report['recommendation']}")
    lines += render_action(report["action"])
    if perf.get("trend"):
        lines += ["", "Week        AUC    est.AUC  Recall  Prec.  F1     Trend"]
        for r in perf["trend"]:
            lines.append(
                f"{r['week']}  {r['AUC']:<6} {r['est. AUC (CBPE)']:<8} {r['recall']:<7} {r['precision']:<6} "
                f"{r['F1']:<6} {r['trend']}"
            )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.0f} min"
        if seconds >= 90
        else f"{seconds:.0f} s"
    )


def render_action(action: dict[str, Any]) -> list[str]:
    """The "Action" lines of the report: action, expected completion, validation, promotion."""
    lines = [
        f"Action: {action['action']}" + (f" — {'; '.join(action['reasons'])}" if action["reasons"] else "")
    ]
    expected = action.get("expected_duration_seconds")
    if expected is None:
        lines.append(f"→ Expected completion: unknown ({action['duration_basis']})")
    else:
        at = f", at {action['expected_completion']}" if action.get("expected_completion") else ""
        lines.append(f"→ Expected completion: {_duration(expected)} ({action['duration_basis']}{at})")
    v = action["validation"]
    if v.get("error"):
        lines.append(f"→ Validation: holdout not available yet ({v['error']})")
    else:
        lines.append(
            f"→ Validation: holdout set = {v['rule']}: {v['first_as_of']} .. {v['last_as_of']} "
            f"({v['snapshots']} snapshot(s))"
        )
    lines.append(f"→ Promotion: {action['promotion']['rule']}")
    return lines
