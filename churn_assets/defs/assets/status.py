"""The MLOps status report as an asset (the same report `churnops status` prints).

Unpartitioned and in its own group, so it can be materialized on demand from the UI (or by a
schedule) after any weekly run; every field comes from stored state (registry, monitoring tables,
prediction log, audit log) through ``churn_assets.monitoring.status``.
"""

import json

import dagster as dg

from churn_assets.defs.keys import STATUS_GROUP, STATUS_REPORT
from churn_assets.settings import Settings


@dg.asset(
    key=STATUS_REPORT,
    group_name=STATUS_GROUP,
    kinds={"duckdb", "mlflow"},
    description=(
        "The MLOps Status Report: production model and version, week deployed, performance vs the AUC "
        "threshold (realised and CBPE estimate), drift findings, requests/s and p95 latency from the "
        "prediction log, and the last registry action."
    ),
)
def status_report(settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
    from churn_assets.monitoring.status import build_status_report, render_status

    report = build_status_report(settings)
    model, perf, drift, traffic = report["model"], report["performance"], report["drift"], report["traffic"]
    return dg.MaterializeResult(
        metadata={
            "model_version": str(model.get("version")),
            "week_deployed": str(model.get("week_deployed")),
            "auc": perf.get("auc"),
            "estimated_auc": perf.get("estimated_auc"),
            "below_threshold": perf.get("below_threshold"),
            "n_drifted_features": drift.get("n_drifted") or 0,
            "requests_per_second": traffic.get("requests_per_second"),
            "latency_p95_ms": traffic.get("latency_p95_ms"),
            "recommendation": report["recommendation"],
            "report": dg.MetadataValue.md("```\n" + render_status(report) + "\n```"),
            "json": dg.MetadataValue.json(json.loads(json.dumps(report, default=str))),
        }
    )
