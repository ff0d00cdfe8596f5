"""`churnops status [--json]` as a user runs it (a subprocess) on a tiny production world: every field of
the spec's MLOps Status Report, each equal to the stored state it is read from.

World: 1,500 customers, 4 snapshot months, a quick champion (tests/monitoring_helpers.py), two production
weeks with the weekly monitoring reports of the first, HTTP predictions in the prediction log. Past
training runs are MLflow parent runs of the `retraining` job (what dagster-mlflow records for each Dagster
run: the run named after its job, tag `dagster_run_id`) with known start and end times, so the expected
completion has a known answer; the full training graph is tested in tests/model/test_training_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics

import dagster as dg
import numpy as np
import polars as pl
import pytest

from churn_assets.defs.assets.monitoring import drift_report, performance_report
from churn_assets.modeling.names import GATES
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.tracking import configure
from churn_assets.monitoring import history
from churn_assets.serving.prediction_log import write_predictions
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.code.test_cli import churnops, json_document
from tests.monitoring_helpers import all_resources, production_world, tiny_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DURATIONS = (600.0, 900.0, 1500.0)  # seconds of three finished retraining runs


def _env(settings: Settings) -> dict[str, str]:
    """The tiny world's settings for the `churnops` subprocess."""
    m = settings.modeling
    return {
        "CHURNOPS_SIMULATION__N_CUSTOMERS": str(settings.simulation.n_customers),
        "CHURNOPS_SIMULATION__HISTORY_MONTHS": str(settings.simulation.history_months),
        "CHURNOPS_MODELING__TRAIN_PERIODS": json.dumps(list(m.train_periods)),
        "CHURNOPS_MODELING__VAL_PERIODS": json.dumps(list(m.val_periods)),
        "CHURNOPS_MODELING__TEST_PERIODS": json.dumps(list(m.test_periods)),
    }


def _retraining_run(settings: Settings, start: dt.datetime, seconds: float | None) -> str:
    """An MLflow parent run of the `retraining` job from ``start``, finished after ``seconds`` (None:
    still running)."""
    tracking = configure(settings)
    run = tracking.client.create_run(
        tracking.experiment_id,
        start_time=int(start.timestamp() * 1000),
        tags={"dagster_run_id": f"run-{start:%H%M%S}"},
        run_name="retraining",
    )
    if seconds is not None:
        end = start + dt.timedelta(seconds=seconds)
        tracking.client.set_terminated(run.info.run_id, "FINISHED", end_time=int(end.timestamp() * 1000))
    return run.info.run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, history_cache):  # type: ignore[no-untyped-def]
    settings = tiny_settings(tmp_path_factory.mktemp("status"))
    instance, weeks = production_world(settings, production_weeks=2, histories=history_cache)
    result = dg.materialize(
        [drift_report, performance_report],
        partition_key=weeks[0],
        instance=instance,
        resources=all_resources(settings),
    )
    assert result.success
    rng = np.random.default_rng(0)
    n = 600
    start = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)
    write_predictions(
        settings,
        pl.DataFrame(
            {
                "ts": [start + dt.timedelta(seconds=i / 20) for i in range(n)],  # 20 requests/s
                "request_id": [f"r{i}" for i in range(n)],
                "customer_id": list(range(n)),
                "model_name": ["churn-model"] * n,
                "model_version": ["1"] * n,
                "variant": ["champion"] * n,
                "score": rng.random(n),
                "label": [None] * n,
                "threshold": [0.5] * n,
                "latency_ms": rng.gamma(2.0, 5.0, n),
                "feature_hash": ["h"] * n,
                "source": ["http"] * n,
                "as_of": [dt.date(2026, 1, 5)] * n,
            }
        ),
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for i, seconds in enumerate(DURATIONS):
        _retraining_run(settings, now - dt.timedelta(days=3 - i), seconds)
    return settings, weeks


def test_status_json_carries_every_field_of_the_spec(world) -> None:  # type: ignore[no-untyped-def]
    settings, weeks = world
    report = json_document(churnops("status", "--json", home=settings.home, **_env(settings)))
    assert isinstance(report, dict)
    champion = ModelRegistry(settings).version_by_alias("champion")
    assert champion is not None
    # Production model and the week it was deployed.
    model = report["model"]
    assert model["version"] == str(champion.version) and model["semver"] == champion.tags["semver"]
    assert model["week_deployed"] == weeks[0]
    # Current performance vs threshold (estimated: no week is labelled yet).
    with Warehouse.of(settings).connect(read_only=True) as con:
        [stored] = [w for w in history.performance_history(con) if w.week == weeks[0]]
        drifted = history.drift_history(con).filter(pl.col("drifted"))
    perf = report["performance"]
    assert perf["threshold"] == 0.78 and perf["auc"] is None
    assert perf["estimated_auc"] == pytest.approx(stored.estimated_auc)
    assert perf["below_threshold"] == (stored.estimated_auc < 0.78) and perf["basis"] == "estimated"
    # Drift with severity.
    drift = report["drift"]
    assert drift["week"] == weeks[0] and drift["n_drifted"] == drifted.height
    assert {f["feature"]: f["severity"] for f in drift["features"]} == dict(
        zip(drifted["feature"], drifted["severity"], strict=True)
    )
    assert drift["max_severity"] in ("NONE", "LOW", "MEDIUM", "HIGH")
    # Requests/s and P95.
    traffic = report["traffic"]
    assert traffic["requests"] == 600 and traffic["requests_per_second"] == pytest.approx(20, rel=0.01)
    assert traffic["latency_p95_ms"] > traffic["latency_p50_ms"] > 0
    # The action taken, its expected completion, validation and promotion rule.
    action = report["action"]
    cfg = settings.automation
    expected_reasons = []  # the retrain sensor's rules (docs/automation.md) on this report's fields
    if cfg.retrain_on_estimated_auc and perf["estimated_auc"] < cfg.retrain_auc_threshold:
        expected_reasons.append(
            f"estimated AUC {perf['estimated_auc']:.3f} below {cfg.retrain_auc_threshold}"
        )
    if drift["n_drifted"] >= cfg.retrain_min_drifted_features:
        expected_reasons.append(
            f"{drift['n_drifted']} features drifted (max severity {drift['max_severity']})"
        )
    assert action["reasons"] == expected_reasons
    assert action["action"] == (
        "automated retraining pipeline triggered" if expected_reasons else "none: champion within threshold"
    )
    assert action["expected_duration_seconds"] == statistics.median(DURATIONS)
    assert action["duration_basis"] == "median of 3 finished training/retraining run(s)"
    snapshots = Timeline.from_settings(settings.simulation).monthly_snapshots
    lo, hi = settings.modeling.test_periods
    assert action["validation"] == {
        "split_mode": "periods",
        "first_as_of": snapshots[lo - 1].isoformat(),
        "last_as_of": snapshots[hi - 1].isoformat(),
        "snapshots": hi - lo + 1,
        "rule": f"monthly snapshots {lo}-{hi} of the history",
    }
    promotion = action["promotion"]
    champion_auc = float(champion.tags["metric.auc"])
    assert promotion["mode"] == "auto" and promotion["gates"] == list(GATES)
    assert promotion["champion_test_auc"] == pytest.approx(champion_auc)
    assert promotion["min_challenger_auc"] == pytest.approx(champion_auc + settings.modeling.min_auc_gain)
    assert report["action_taken"]["action"] == ModelRegistry(settings).read_audit()[-1].action


def test_status_text_while_a_retraining_runs(world) -> None:  # type: ignore[no-untyped-def]
    settings, _ = world
    started = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    run_id = _retraining_run(settings, started, None)
    try:
        result = churnops("status", home=settings.home, **_env(settings))
        assert result.returncode == 0, result.stderr
        report = json_document(churnops("status", "--json", home=settings.home, **_env(settings)))
    finally:
        configure(settings).client.set_terminated(run_id, "FAILED")
    assert isinstance(report, dict)
    action = report["action"]
    assert action["action"] == "retraining pipeline running"
    assert action["started_at"] == started.isoformat()
    expected = started + dt.timedelta(seconds=statistics.median(DURATIONS))
    assert action["expected_completion"] == expected.isoformat()
    text = result.stdout
    for line in (
        "Production model: churn-model v",
        "Deployed: week ",
        "Performance: AUC",
        "Drift (week ",
        "req/s, latency P50/P95/P99",
        "Action: retraining pipeline running",
        "→ Expected completion: 15 min (median of 3 finished training/retraining run(s), at "
        + expected.isoformat(),
        "→ Validation: holdout set = monthly snapshots 4-4 of the history: ",
        "→ Promotion: automatic if all 7 gates pass and its AUC beats the champion's on the same holdout by "
        "more than 0.02",
    ):
        assert line in text, (line, text)
    # A failed run is neither running nor a duration sample.
    after = json_document(churnops("status", "--json", home=settings.home, **_env(settings)))
    assert isinstance(after, dict) and after["action"]["action"] != "retraining pipeline running"
    assert after["action"]["expected_duration_seconds"] == statistics.median(DURATIONS)
