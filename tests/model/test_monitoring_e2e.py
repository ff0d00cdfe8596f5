"""The two weekly monitoring assets materialized for production weeks of a tiny world, and the status
report built from what they stored.

World: 1,500 customers, 4 snapshot months, a quick champion (tests/monitoring_helpers.py), then 16
production weeks so the first production week's 90-day labels (+ the 1-week report delay) complete.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from churn_assets.defs.assets.monitoring import drift_report, performance_report
from churn_assets.defs.keys import DRIFT_REPORT, PERFORMANCE_REPORT, STATUS_REPORT
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.training_set import label_complete_until
from churn_assets.monitoring import history
from churn_assets.monitoring.sources import current_window
from churn_assets.monitoring.status import build_status_report, render_status, traffic_stats
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.monitoring_helpers import all_resources, production_world, tiny_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _materialize(settings, instance, week: str) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    result = dg.materialize(
        [drift_report, performance_report],
        partition_key=week,
        instance=instance,
        resources=all_resources(settings),
    )
    assert result.success
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, history_cache):  # type: ignore[no-untyped-def]
    settings = tiny_settings(tmp_path_factory.mktemp("monitoring"))
    instance, weeks = production_world(settings, production_weeks=16, histories=history_cache)
    timeline = Timeline.from_settings(settings.simulation)
    first_as_of = dt.date.fromisoformat(weeks[0]) + dt.timedelta(days=7)
    ready = label_complete_until(first_as_of, timeline.label_horizon_days, 7)
    labelled_week = next(w for w in weeks if dt.date.fromisoformat(w) + dt.timedelta(days=7) >= ready)
    first = _materialize(settings, instance, weeks[0])
    later = _materialize(settings, instance, labelled_week)
    return settings, instance, weeks, first, later, labelled_week


def test_drift_report_metadata_follows_the_contract(world) -> None:  # type: ignore[no-untyped-def]
    settings, _, weeks, first, _, _ = world
    meta = first[DRIFT_REPORT.to_user_string()]
    assert isinstance(meta["n_drifted_features"], int)
    assert (
        isinstance(meta["drifted_features"], list)
        and len(meta["drifted_features"]) == meta["n_drifted_features"]
    )
    assert meta["max_severity"] in ("NONE", "LOW", "MEDIUM", "HIGH")
    assert meta["n_tested"] == 45 - len(settings.monitoring.exclude_features)
    assert "| feature | drift score | status | impact |" in str(meta["drift_table"])
    assert "p < 0.01 / 42" in str(meta["rule"])
    with Warehouse.of(settings).connect(read_only=True) as con:
        stored = history.drift_history(con).filter(pl.col("week") == dt.date.fromisoformat(weeks[0]))
    assert stored.height == meta["n_tested"]
    assert sorted(stored.filter(pl.col("drifted")).get_column("feature").to_list()) == sorted(
        meta["drifted_features"]
    )
    assert (
        str(meta["drift_trend"])
        .splitlines()[2]
        .startswith(f"| {weeks[0]} | 1 | {meta['n_drifted_features']} |")
    )


def test_performance_report_estimates_now_and_realises_once_labels_arrive(world) -> None:  # type: ignore[no-untyped-def]
    settings, _, weeks, first, later, labelled_week = world
    early = first[PERFORMANCE_REPORT.to_user_string()]
    assert "auc" not in early and early["labelled_rows"] == 0
    assert 0.5 < float(early["estimated_auc"]) < 1  # type: ignore[arg-type]
    assert early["below_threshold_basis"] == "estimated" and isinstance(early["below_threshold"], bool)
    assert early["scored_now"] == early["prediction_rows"] > 1000  # no batch scores: scored here  # type: ignore[operator]
    meta = later[PERFORMANCE_REPORT.to_user_string()]
    assert meta["labelled_week"] == weeks[0] and meta["newly_labelled_weeks"] == [weeks[0]]
    assert 0.5 < float(meta["auc"]) <= 1 and meta["labelled_rows"] == early["prediction_rows"]  # type: ignore[arg-type]
    assert (
        meta["below_threshold"] == (float(meta["auc"]) < 0.78) and meta["below_threshold_basis"] == "realised"
    )  # type: ignore[arg-type]
    # The realised AUC is the one of the stored week-1 predictions against their labels.
    with Warehouse.of(settings).connect(read_only=True) as con:
        rows = {w.week: w for w in history.performance_history(con)}
    assert rows[weeks[0]].auc == pytest.approx(meta["auc"])
    assert rows[weeks[0]].estimated_auc == pytest.approx(early["estimated_auc"])
    trend = str(meta["trend"]).splitlines()
    assert len(trend) == 4  # header, rule, the two monitored weeks
    assert trend[2].startswith(f"| {weeks[0]} | 1 | {float(meta['auc']):.3f} |")  # type: ignore[arg-type]
    assert trend[3].startswith(f"| {labelled_week} | 1 | — | {float(meta['estimated_auc']):.3f} |")  # type: ignore[arg-type]
    assert trend[3].endswith("(est.) |")


def test_a_history_week_is_skipped(world) -> None:  # type: ignore[no-untyped-def]
    settings, instance, _, _, _, _ = world
    key = Timeline.from_settings(settings.simulation).history_week_keys()[-5]
    meta = _materialize(settings, instance, key)
    assert "history week" in str(meta[DRIFT_REPORT.to_user_string()]["skipped"])
    assert meta[DRIFT_REPORT.to_user_string()]["n_drifted_features"] == 0


def test_status_report_fields_equal_the_stored_state(world) -> None:  # type: ignore[no-untyped-def]
    settings, _, weeks, _, later, labelled_week = world
    rng = np.random.default_rng(0)
    log = pl.DataFrame(
        {
            "ts": [
                dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=i / 50) for i in range(1000)
            ],
            "latency_ms": rng.gamma(2.0, 8.0, 1000),
            "source": ["http"] * 1000,
        }
    )
    report = build_status_report(settings, predictions=log)
    registry = ModelRegistry(settings)
    champion = registry.version_by_alias("champion")
    assert champion is not None
    assert report["model"]["version"] == str(champion.version)
    assert report["model"]["semver"] == champion.tags["semver"]
    assert report["model"]["week_deployed"] == weeks[0]
    perf = later[PERFORMANCE_REPORT.to_user_string()]
    assert report["performance"]["auc"] == pytest.approx(perf["auc"])
    assert report["performance"]["auc_week"] == weeks[0]
    assert report["performance"]["estimated_auc"] == pytest.approx(perf["estimated_auc"])
    drift = later[DRIFT_REPORT.to_user_string()]
    assert report["drift"]["week"] == labelled_week
    assert report["drift"]["n_drifted"] == drift["n_drifted_features"]
    assert [f["feature"] for f in report["drift"]["features"]] == sorted(
        drift["drifted_features"],  # type: ignore[arg-type]
        key=lambda f: -next(x["score"] for x in report["drift"]["features"] if x["feature"] == f),
    )
    assert report["traffic"] == traffic_stats(log)
    assert report["traffic"]["latency_p95_ms"] == pytest.approx(
        float(np.quantile(log["latency_ms"], 0.95)), rel=0.02
    )
    assert report["traffic"]["requests_per_second"] == pytest.approx(50, rel=0.01)
    last = registry.read_audit()[-1]
    assert (
        report["action_taken"]["action"] == last.action and report["action_taken"]["version"] == last.version
    )
    text = render_status(report)
    assert f"registry version {champion.version}" in text and "Recommendation:" in text
    json.dumps(report, default=str)


def test_current_window_equals_the_point_in_time_lookup(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings, _, weeks, _, _, _ = world
    as_of = dt.date.fromisoformat(weeks[0]) + dt.timedelta(days=7)
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(settings.warehouse_path, copy)
    with Warehouse(copy).connect() as con:
        direct = current_window(con, as_of)
        entity = direct.select(
            "customer_id", pl.col("as_of").cast(pl.Datetime("us")).alias("event_timestamp")
        )
        pit = OfflineStore(con).get_historical_features(entity)
        expected = pit.with_columns(pl.col("event_timestamp").cast(pl.Date).alias("as_of")).drop(
            "event_timestamp"
        )
        assert direct.select(expected.columns).equals(expected)
        # A group without the customer's row at as_of: the direct join would be wrong -> PIT fallback.
        victim = int(direct["customer_id"][0])
        con.execute(
            "DELETE FROM features.customer_usage WHERE customer_id = ? AND CAST(event_timestamp AS DATE) = ?",
            [victim, as_of],
        )
        fallback = current_window(con, as_of)
        assert fallback.height == direct.height
        row = fallback.filter(pl.col("customer_id") == victim)
        assert (
            row["calls_last_30d"].item() is None
            or row["calls_last_30d"].item() != direct["calls_last_30d"][0]
        )


def test_status_report_asset_records_the_stored_state(world) -> None:  # type: ignore[no-untyped-def]
    from churn_assets.defs.assets.status import status_report

    settings, instance, _, _, _, _ = world
    result = dg.materialize([status_report], instance=instance, resources=all_resources(settings))
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == STATUS_REPORT]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    report = build_status_report(settings)
    champion = ModelRegistry(settings).version_by_alias("champion")
    assert champion is not None and meta["model_version"] == str(champion.version)
    assert meta["week_deployed"] == str(report["model"]["week_deployed"])
    assert meta["auc"] == pytest.approx(report["performance"]["auc"])
    assert meta["estimated_auc"] == pytest.approx(report["performance"]["estimated_auc"])
    assert meta["n_drifted_features"] == report["drift"]["n_drifted"]
    assert meta["recommendation"] == report["recommendation"]
    assert "MLOPS STATUS REPORT" in str(meta["report"])


def test_week_predictions_read_the_log_and_score_only_the_rest(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A canary week: the champion logged 100 customers; monitoring scores the rest, never those 100."""
    from churn_assets.monitoring.sources import load_champion
    from churn_assets.monitoring.weekly import score_with_serving_code, week_predictions
    from churn_assets.serving.prediction_log import write_predictions

    settings, _, weeks, _, _, _ = world
    serving = settings.serving.model_copy(update={"prediction_log_dir": tmp_path / "log"})
    logged_settings = settings.model_copy(update={"serving": serving})
    as_of = dt.date.fromisoformat(weeks[3]) + dt.timedelta(days=7)
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(settings.warehouse_path, copy)
    champion = load_champion(settings)
    calls: list[int] = []

    def scorer(ch, features, day):  # type: ignore[no-untyped-def]
        calls.append(features.height)
        return score_with_serving_code(ch, features, day)

    with Warehouse(copy).connect() as con:
        snapshot = current_window(con, as_of, champion.features)
        canary = scorer(champion, snapshot.head(100), as_of).with_columns(
            pl.lit("canary").alias("variant"), pl.lit(0.123).alias("score")
        )
        other = scorer(champion, snapshot.slice(100, 50), as_of).with_columns(
            pl.lit("999").alias("model_version")
        )
        write_predictions(logged_settings, canary)
        write_predictions(logged_settings, other)  # another version's rows: not the champion's scores
        calls.clear()
        frame, scored = week_predictions(logged_settings, con, champion, as_of, scorer)
    assert scored == snapshot.height - 100 and calls == [scored]
    assert frame.height == snapshot.height == frame["customer_id"].n_unique()
    ids = snapshot["customer_id"].head(100).to_list()
    from_log = frame.filter(pl.col("customer_id").is_in(ids))
    assert from_log["variant"].unique().to_list() == ["canary"] and (from_log["score"] == 0.123).all()
    rest = frame.filter(~pl.col("customer_id").is_in(ids))
    assert rest["model_version"].unique().to_list() == [champion.version]
    assert rest["variant"].unique().to_list() == ["champion"]


def test_the_weekly_step_writes_the_quality_gauges_prometheus_scrapes(world) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    settings, _, _, _, later, _ = world
    samples = {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(settings.monitoring_metrics_path.read_text())
        for s in family.samples
    }
    perf, drift = later[PERFORMANCE_REPORT.to_user_string()], later[DRIFT_REPORT.to_user_string()]
    version = {"model_version": perf["model_version"]}
    assert samples["churn_model_auc"] == (version, pytest.approx(perf["auc"]))
    assert samples["churn_model_estimated_auc"] == (version, pytest.approx(perf["estimated_auc"]))
    assert samples["churn_drifted_features"] == (version, drift["n_drifted_features"])


def test_both_weekly_assets_link_the_weeks_self_contained_html_report(world) -> None:  # type: ignore[no-untyped-def]
    settings, _, weeks, first, _, _ = world
    drift_meta, perf_meta = first[DRIFT_REPORT.to_user_string()], first[PERFORMANCE_REPORT.to_user_string()]
    path = settings.monitoring_dir / "reports" / f"week_{weeks[0]}.html"
    assert drift_meta["report"] == perf_meta["report"] == str(path)
    assert perf_meta["report_url"] == path.as_uri()
    html = path.read_text()
    assert 'src="http' not in html and "href=" not in html  # images are data URIs
    for feature in history_features(settings, weeks[0]):
        assert f'<td class="text">{feature}</td>' in html


def history_features(settings, week: str) -> list[str]:  # type: ignore[no-untyped-def]
    with Warehouse.of(settings).connect(read_only=True) as con:
        rows = history.drift_history(con).filter(pl.col("week") == dt.date.fromisoformat(week))
    return rows.get_column("feature").to_list()
