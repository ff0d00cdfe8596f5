"""The weekly monitoring report: one self-contained HTML file per week (docs/monitoring.md, "HTML report").

Written beside the monitoring state (``<monitoring_dir>/reports/week_<week>.html``) by the weekly
monitoring assets and by ``churnops report``, from stored state only: the week's drift rows
(``monitoring.drift_history``) and drift histograms (the PNG the drift report wrote), the AUC and
CBPE-estimate trend up to the week (``monitoring.performance_history``, drawn with matplotlib), the
rollout (state and history) and the week's traffic per model version and variant (the prediction log, the week's
production window). Rendered with a jinja2 template (autoescaped); images are embedded as base64 ``data:`` URIs, so the file
opens anywhere with no other file or network access.
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import polars as pl

from churn_assets.monitoring.history import drift_history, drift_runs, performance_history
from churn_assets.monitoring.status import traffic_stats
from churn_assets.serving.prediction_log import read_predictions
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from churn_assets.timeline import Timeline

DRIFT_COLUMNS = ["feature", "kind", "test", "statistic", "p_value", "effect", "severity", "drifted"]

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>churnops monitoring — week {{ week }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
tr.drifted td { background: #fde8e8; }
.note { color: #666; }
img { max-width: 100%; }
</style>
</head>
<body>
<h1>Monitoring report — week {{ week }}</h1>
<p class="note">Generated {{ generated }} UTC from the stored monitoring state of {{ home }}.</p>

<h2>Data drift</h2>
{% if drift_run %}
<p>Champion {{ drift_run.model_version }}: {{ drift_run.n_drifted }} of {{ drift_run.n_tested }} features drifted
(max severity {{ drift_run.max_severity }}); root cause: {{ drift_run.root_cause or "n/a" }}.</p>
{% endif %}
{% if drift_rows %}
<table>
<tr>{% for c in drift_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in drift_rows %}
<tr class="{{ 'drifted' if row.drifted else '' }}">{% for c in drift_columns %}
<td class="{{ 'text' if row[c] is string else '' }}">{{ fmt(row[c]) }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% else %}
<p class="note">No drift report stored for this week.</p>
{% endif %}
{% if histograms %}<h3>Drifted features: reference vs current</h3>
<img alt="drift histograms" src="data:image/png;base64,{{ histograms }}">{% endif %}

<h2>Performance</h2>
{% if auc_plot %}<img alt="AUC trend" src="data:image/png;base64,{{ auc_plot }}">{% endif %}
{% if performance %}
<table>
<tr><th>week</th><th>model</th><th>rows</th><th>estimated AUC</th><th>AUC</th><th>recall</th><th>precision</th></tr>
{% for p in performance %}
<tr><td class="text">{{ p.week }}</td><td class="text">{{ p.model_version }}</td><td>{{ p.rows }}</td>
<td>{{ fmt(p.estimated_auc) }}</td><td>{{ fmt(p.auc) }}</td><td>{{ fmt(p.recall) }}</td><td>{{ fmt(p.precision) }}</td></tr>
{% endfor %}
</table>
<p class="note">Threshold: AUC {{ threshold }} (realised once the 90-day labels are complete; CBPE estimate before).</p>
{% else %}
<p class="note">No performance stored up to this week.</p>
{% endif %}

<h2>Rollout</h2>
<p>Phase {{ rollout.phase }}; stable {{ rollout.stable_version or "none" }}, candidate {{ rollout.candidate_version or "none" }}.</p>
{% if rollout_events %}
<table>
<tr><th>at</th><th>action</th><th>phase</th><th>stable</th><th>candidate</th><th>by</th><th>reason</th></tr>
{% for e in rollout_events %}
<tr>{% for k in ["at", "action", "phase", "stable_version", "candidate_version", "by", "reason"] %}
<td class="text">{{ e.get(k) or "" }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% endif %}

<h2>Traffic</h2>
<p>{{ traffic.requests }} scored rows ({{ traffic.source }}){% if traffic.get("requests_per_second") %},
{{ fmt(traffic.requests_per_second) }} rows/s{% endif %}{% if traffic.get("latency_p95_ms") is not none %};
latency P50 / P95 / P99 {{ fmt(traffic.latency_p50_ms) }} / {{ fmt(traffic.latency_p95_ms) }} / {{ fmt(traffic.latency_p99_ms) }} ms{% endif %}.</p>
{% if variants %}
<p>Per model version and variant (A/B groups while a rollout runs):</p>
<table>
<tr><th>model</th><th>variant</th><th>source</th><th>rows</th><th>mean score</th><th>flagged share</th><th>P95 ms</th></tr>
{% for v in variants %}
<tr><td class="text">{{ v.model_version }}</td><td class="text">{{ v.variant }}</td><td class="text">{{ v.source }}</td>
<td>{{ v.rows }}</td><td>{{ fmt(v.mean_score) }}</td><td>{{ fmt(v.flagged_share) }}</td><td>{{ fmt(v.p95_ms) }}</td></tr>
{% endfor %}
</table>
{% endif %}
</body>
</html>
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def _b64(path: Path | None) -> str | None:
    return base64.b64encode(path.read_bytes()).decode() if path is not None and path.exists() else None


def report_path(settings: Settings, week: dt.date) -> Path:
    return settings.monitoring_dir / "reports" / f"week_{week.isoformat()}.html"


def newest_week(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The newest week with a stored drift or performance report."""
    weeks = [r.week for r in performance_history(con)]
    runs = drift_runs(con)
    weeks += [w.isoformat() for w in runs.get_column("week").to_list()] if runs.height else []
    return dt.date.fromisoformat(max(weeks)) if weeks else None


def _variants(log: pl.DataFrame) -> list[dict[str, Any]]:
    if log.height == 0:
        return []
    return (
        log.group_by("model_version", "variant", "source")
        .agg(
            pl.len().alias("rows"),
            pl.col("score").mean().alias("mean_score"),
            pl.col("label").cast(pl.Float64).mean().alias("flagged_share"),
            pl.col("latency_ms").quantile(0.95).alias("p95_ms"),
        )
        .sort("model_version", "variant", "source")
        .to_dicts()
    )


def write_weekly_report(settings: Settings, con: duckdb.DuckDBPyConnection, week: dt.date) -> Path:
    """Render week ``week``'s report from the stored state and write it (replacing an older one)."""
    from churn_assets.monitoring import plots  # matplotlib: imported when a report is drawn

    history = drift_history(con)
    rows = history.filter(pl.col("week") == week).sort("drifted", "effect", descending=True)
    runs = drift_runs(con).filter(pl.col("week") == week)
    performance = [p for p in performance_history(con) if p.week <= week.isoformat()]
    threshold = settings.monitoring.auc_threshold
    with tempfile.TemporaryDirectory() as tmp:
        auc_png = plots.auc_trend(performance, threshold, Path(tmp) / "auc.png")
        auc_plot = _b64(auc_png)
    # The week's predictions: batch rows carry the snapshot's as-of date as ts (automation.production).
    as_of = Timeline.from_settings(settings.simulation).snapshot_for_week(week) or week
    start = dt.datetime.combine(as_of, dt.time())
    log = read_predictions(settings, start, start + dt.timedelta(days=7))
    rollout = RolloutStore(settings).load()
    html = (
        jinja2.Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            week=week.isoformat(),
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            home=settings.home,
            drift_run=runs.to_dicts()[-1] if runs.height else None,
            drift_columns=DRIFT_COLUMNS,
            drift_rows=rows.select(DRIFT_COLUMNS).to_dicts(),
            histograms=_b64(settings.monitoring_dir / "plots" / f"drift_{week.isoformat()}.png"),
            auc_plot=auc_plot,
            performance=performance,
            threshold=threshold,
            rollout=rollout,
            rollout_events=rollout.history[-20:],
            traffic=traffic_stats(log),
            variants=_variants(log),
            fmt=_fmt,
        )
    )
    path = report_path(settings, week)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".html.tmp")
    tmp_path.write_text(html, encoding="utf-8")
    tmp_path.replace(path)
    return path
