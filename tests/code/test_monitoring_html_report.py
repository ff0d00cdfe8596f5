"""The weekly HTML monitoring report: written beside the monitoring state, self-contained (no external
src / href: images are data URIs), holding the week's drift rows, the AUC trend, the rollout and the
week's traffic per variant."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl

from churn_assets.monitoring.drift import detect_drift, profile_reference
from churn_assets.monitoring.history import save_drift, save_performance
from churn_assets.monitoring.html_report import report_path, write_weekly_report
from churn_assets.monitoring.performance import WeekPerformance
from churn_assets.serving.prediction_log import write_predictions
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline

WEEK = dt.date(2025, 6, 2)


def _drifted_week(settings: Settings) -> list[str]:
    rng = np.random.default_rng(0)
    ref = pl.DataFrame({"tenure_days": rng.normal(400, 50, 2000), "calls_last_30d": rng.normal(30, 5, 2000)})
    cur = pl.DataFrame({"tenure_days": rng.normal(400, 50, 2000), "calls_last_30d": rng.normal(45, 5, 2000)})
    report = detect_drift(profile_reference(ref, ref.columns), cur, settings.monitoring)
    with Warehouse.of(settings).connect() as con:
        save_drift(con, WEEK, WEEK + dt.timedelta(days=7), "3", report)
        for i, week in enumerate([WEEK - dt.timedelta(days=7), WEEK]):
            save_performance(
                con,
                WeekPerformance(
                    week.isoformat(), week.isoformat(), "3", 1000, 0.81 - i / 100, 0.6, 0.5, 0.55
                ),
            )
    return [f.feature for f in report.drifted]


def test_the_report_is_self_contained_and_holds_the_weeks_drift_rows(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    drifted = _drifted_week(settings)
    assert drifted == ["calls_last_30d"]
    # A drift histogram the drift asset would have written, and the week's predictions (two variants).
    plots = settings.monitoring_dir / "plots"
    plots.mkdir(parents=True)
    png = plots / f"drift_{WEEK}.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    # Batch rows of the week's production window carry its as-of date as ts (automation.production).
    as_of = Timeline.from_settings(settings.simulation).snapshot_for_week(WEEK) or WEEK
    ts = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    write_predictions(
        settings,
        pl.DataFrame(
            {
                "ts": [ts] * 4,
                "request_id": ["r"] * 4,
                "customer_id": [1, 2, 3, 4],
                "model_name": ["churn-model"] * 4,
                "model_version": ["3", "3", "4", "4"],
                "variant": ["champion", "champion", "canary", "canary"],
                "score": [0.1, 0.9, 0.2, 0.3],
                "label": [0, 1, 0, 0],
                "threshold": [0.5] * 4,
                "latency_ms": [1.0, 2.0, 3.0, 4.0],
                "feature_hash": ["h"] * 4,
                "source": ["batch"] * 4,
                "as_of": [as_of] * 4,
            }
        ),
    )
    RolloutStore(settings).set_stable("3")

    with Warehouse.of(settings).connect() as con:
        path = write_weekly_report(settings, con, WEEK)

    assert path == report_path(settings, WEEK) == settings.monitoring_dir / "reports" / f"week_{WEEK}.html"
    html = path.read_text()
    # Self-contained: every src / href is a data URI (no file, no network).
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<script" not in html and "@import" not in html
    # The week's drift rows: every tested feature, the drifted one marked.
    assert re.search(r'<tr class="drifted">\s*<td class="text">calls_last_30d</td>', html)
    assert re.search(r'<tr class="">\s*<td class="text">tenure_days</td>', html)
    assert html.count('src="data:image/png;base64,') == 2  # drift histograms + AUC trend
    assert "0.800" in html and "0.810" in html  # the estimate trend
    assert "canary" in html and "champion" in html  # traffic per variant
    assert "Phase none; stable 3" in html


def test_churnops_report_writes_the_newest_week_or_the_one_asked(tmp_path: Path) -> None:
    from tests.code.test_cli import assert_one_line_error, churnops

    empty = churnops("report", home=tmp_path / "empty")
    assert empty.returncode == 1 and "no monitored week yet" in empty.stderr

    settings = Settings(home=tmp_path)
    _drifted_week(settings)
    newest = churnops("report", home=tmp_path)
    assert newest.returncode == 0, newest.stderr
    assert Path(newest.stdout.strip()) == report_path(settings, WEEK)
    assert "calls_last_30d" in report_path(settings, WEEK).read_text()
    earlier = WEEK - dt.timedelta(days=7)
    asked = churnops("report", "--week", earlier.isoformat(), home=tmp_path)
    assert Path(asked.stdout.strip()) == report_path(settings, earlier)
    assert_one_line_error(churnops("report", "--week", "last", home=tmp_path), 2, "--week", "YYYY-MM-DD")
