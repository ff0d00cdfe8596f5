"""The model-quality gauges: the monitoring history written as a Prometheus text file and served from it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from churn_assets.monitoring.prometheus import (
    AUC,
    DRIFTED_FEATURES,
    ESTIMATED_AUC,
    WEEK_TIMESTAMP,
    quality_snapshot,
    serve,
    write_quality_metrics,
)
from churn_assets.settings import MonitoringSettings, Settings
from tests.quality_helpers import VERSION, WEEK_1, WEEK_2, store_quality_history


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_newest_figures_are_written_as_gauges(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert quality_snapshot(con).empty
        assert write_quality_metrics(settings, con) is None  # nothing monitored yet: no file
        assert not settings.monitoring_metrics_path.exists()
        stored = store_quality_history(con, n_shifted=3)
        snapshot = quality_snapshot(con)
        path = write_quality_metrics(settings, con)
    assert stored.drifted_features == 3
    assert snapshot.realised == (WEEK_1, VERSION, pytest.approx(stored.realised_auc))
    assert snapshot.estimated == (WEEK_2, VERSION, pytest.approx(stored.estimated_auc))
    assert path == settings.monitoring_metrics_path
    samples = _samples(path.read_text())
    v = (("model_version", VERSION),)
    assert samples[(AUC, v)] == pytest.approx(stored.realised_auc)
    assert samples[(ESTIMATED_AUC, v)] == pytest.approx(stored.estimated_auc)
    assert samples[(DRIFTED_FEATURES, v)] == 3
    monday = dt.datetime.combine(WEEK_2, dt.time(), tzinfo=dt.UTC).timestamp()
    assert samples[(WEEK_TIMESTAMP, (("kind", "drift"),))] == monday


def test_the_realised_auc_is_absent_until_a_week_is_labelled(tmp_path: Path) -> None:
    from churn_assets.monitoring import history
    from churn_assets.monitoring.performance import WeekPerformance

    settings = Settings(home=tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        history.save_performance(
            con, WeekPerformance("2025-01-06", "2025-01-13", "1", 10, 0.8, 0.5, 0.5, 0.5)
        )
        path = write_quality_metrics(settings, con)
    assert path is not None
    names = {name for name, _ in _samples(path.read_text())}
    assert ESTIMATED_AUC in names and AUC not in names and DRIFTED_FEATURES not in names


def test_the_exporter_serves_the_file_read_on_every_scrape(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, monitoring=MonitoringSettings(metrics_port=1))
    server, _ = serve(settings, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        assert httpx.get(url).status_code == 200  # no file yet: an empty page, not an error
        assert AUC not in httpx.get(url).text
        with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
            stored = store_quality_history(con, n_shifted=1)
            write_quality_metrics(settings, con)
        samples = _samples(httpx.get(url).text)
        assert samples[(DRIFTED_FEATURES, (("model_version", VERSION),))] == stored.drifted_features == 1
        settings.monitoring_metrics_path.write_text("churn_model_auc{broken\n")
        assert httpx.get(url).status_code == 500  # a corrupt file fails the scrape (up = 0), never hides
    finally:
        server.shutdown()
