"""The training graph end to end, in process: churn_pipeline, then the `training` job (training_set ->
candidates -> challenger + 7 blocking gate checks -> champion), a second run that keeps the champion,
and a failing gate that blocks the champion step (and is alerted as a blocked retraining).

Small world (1,500 customers, 18 snapshot months). Its test split has ~4,000 rows and groups of a few
hundred, where recall per segment has a standard error of ~0.05-0.1 and a tuned LightGBM fits its
~17,000 training rows almost perfectly; the fairness / train-test-gap / slice limits are therefore
widened for this world (SMALL_WORLD_LIMITS) — the production defaults stay as in settings.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from churn_assets.defs.assets.training import challenger, champion
from churn_assets.defs.keys import CHALLENGER, CHAMPION
from churn_assets.defs.resources import build_resources
from churn_assets.defs.sensors import build_sensors
from churn_assets.defs.training_checks import gate_checks
from churn_assets.modeling.gates import GATES
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.tracking import configure
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import AlertSettings, AutomationSettings, ModelingSettings, Settings
from tests.code.test_alerts import Receiver
from tests.pipeline_helpers import simulated_instance, small_settings, train

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SMALL_WORLD_LIMITS: dict[str, object] = {
    "gate_max_auc_gap": 0.30,
    "gate_max_disparity": 0.40,
    "gate_min_slice_auc": 0.55,
}
CANDIDATE_NAMES = {
    "lightgbm",
    "xgboost",
    "logistic_regression",
    "random_forest",
    "hist_gradient_boosting",
    "mlp",
    "spline_logistic_regression",
}


def _with_modeling(settings: Settings, **overrides: object) -> Settings:
    modeling = ModelingSettings(
        n_trials=4, timeout_seconds=120, shap_max_rows=300, **(SMALL_WORLD_LIMITS | overrides)
    )  # type: ignore[arg-type]
    return settings.model_copy(update={"modeling": modeling})


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    settings = _with_modeling(small_settings(tmp_path_factory.mktemp("train"), customers=1_500, months=18))
    instance = simulated_instance(settings)
    first = train(settings, instance)
    return settings, instance, first


def test_first_run_materializes_every_training_asset(world) -> None:
    _, _, first = world
    assert first.success
    materialized = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
    assert materialized == {
        "training/training_set",
        "training/candidates",
        "training/challenger",
        "training/champion",
    }


def test_training_set_metadata_has_boundaries_counts_and_rates(world) -> None:
    settings, _, first = world
    meta = _metadata(first, dg.AssetKey(["training", "training_set"]))
    assert meta["train_boundaries"] == "periods 1-12: 2024-01-01 .. 2024-12-02"
    assert str(meta["val_boundaries"]).startswith("periods 13-15: 2025-01-06")
    # History ends after the last window's reports (horizon + 1-week delay): all 18 months labelled.
    assert meta["test_boundaries"] == "periods 16-18: 2025-04-07 .. 2025-06-02"
    assert "2025-06-02" not in str(meta["excluded_snapshots"])
    for split in ("train", "val", "test"):
        assert int(meta[f"{split}_rows"]) > 1_000  # type: ignore[call-overload]
        assert 0.02 < float(meta[f"{split}_positive_rate"]) < 0.3  # type: ignore[arg-type]
    assert meta["leakage_feature_timestamps_after_as_of"] == 0
    stored = TrainingWorkdir.of(settings).load_meta()
    assert meta["data_sha256"] == stored["sha256"]


def test_every_candidate_is_an_mlflow_run_with_params_metrics_artifacts_model(world) -> None:
    settings, _, first = world
    meta = _metadata(first, dg.AssetKey(["training", "candidates"]))
    table = str(meta["experiments"])
    assert all(f"| {name} |" in table for name in CANDIDATE_NAMES)
    assert meta["best_roc"] and "data:image/png;base64," in str(meta["best_roc"])
    tracking = configure(settings)
    runs = tracking.client.search_runs([tracking.experiment_id], "tags.role = 'candidate'")
    assert CANDIDATE_NAMES <= {r.data.tags["model"] for r in runs} <= CANDIDATE_NAMES | {"ensemble"}
    for r in runs:
        assert r.data.params and {"auc", "recall", "f1", "val_auc", "train_seconds"} <= set(r.data.metrics)
        assert r.data.params["imbalance"] in ("none", "balanced")
        top = {a.path for a in tracking.client.list_artifacts(r.info.run_id)}
        assert "plots" in top
        assert r.outputs is not None and r.outputs.model_outputs, (
            "no logged model"
        )  # MLflow 3: a LoggedModel linked to the run
    optuna = meta["optuna"]
    assert isinstance(optuna, dict) and optuna["complete"] + optuna["pruned"] == 4


def test_challenger_is_registered_with_tags_and_every_gate_evaluated(world) -> None:
    settings, _, first = world
    registry = ModelRegistry(settings)
    [version] = registry.versions()
    tags = version.tags
    assert tags["semver"] == "1.0.0" and len(tags["artifact_sha256"]) == 64
    training_meta = _metadata(first, dg.AssetKey(["training", "training_set"]))
    assert tags["data_sha256"] == training_meta["data_sha256"]
    assert len(json.loads(tags["features"])) == 45
    assert {"metric.auc", "metric.recall", "metric.f1", "metric.brier"} <= set(tags)
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert set(checks) == set(GATES)
    assert all(c.asset_key == CHALLENGER for c in checks.values())
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
    meta = _metadata(first, CHALLENGER)
    assert "plot_reliability" in meta and "plot_roc" in meta
    shap = checks["shap"].metadata
    if meta["best_candidate"] == "lightgbm":
        assert "plot_shap" in meta and "top5" in shap
    else:  # SHAP via LightGBM pred_contrib: not applicable to a scikit-learn challenger (gate passes, says so)
        assert "not applicable" in str(shap["method"].value)


def test_first_run_promotes_when_there_is_no_champion(world) -> None:
    settings, _, first = world
    meta = _metadata(first, CHAMPION)
    assert meta["decision"] == "promoted" and meta["champion_before"] == "none"
    assert "no champion yet" in str(meta["reason"])
    registry = ModelRegistry(settings)
    assert registry.aliases() == {"champion": "1"}
    assert [e.action for e in registry.read_audit()] == ["register", "promoted"]


@pytest.fixture(scope="module")
def second(world):
    settings, instance, _ = world
    # Same data, same settings, the (finished) Optuna study resumes: the same models again, no AUC gain.
    return settings, train(settings, instance)


def test_second_run_without_a_better_model_keeps_the_champion(second) -> None:
    settings, result = second
    assert result.success
    candidates = _metadata(result, dg.AssetKey(["training", "candidates"]))
    assert candidates["optuna"]["run_now"] == 0  # type: ignore[index]  # the study resumed, nothing left to run
    meta = _metadata(result, CHAMPION)
    assert meta["decision"] == "kept" and "not > 0.02" in str(meta["reason"])
    registry = ModelRegistry(settings)
    assert registry.aliases() == {"champion": "1", "challenger": "2"}
    assert registry.tags("2")["semver"] in ("1.0.1", "1.1.0")
    last = registry.read_audit()
    kept = [e for e in last if e.action == "kept"]
    assert kept and kept[-1].version == "2" and kept[-1].champion_after == "1"


def test_a_failing_gate_blocks_the_champion_step(world, second) -> None:
    settings, instance, _ = world
    strict = _with_modeling(settings, gate_min_auc=0.99)
    # Re-run only the gated part (challenger + its checks + champion) on the stored candidates.
    result = dg.materialize(
        [challenger, champion, *gate_checks],
        instance=instance,
        resources=build_resources(strict),
        raise_on_error=False,
    )
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["auc_floor"] is False
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert CHALLENGER in materialized and CHAMPION not in materialized
    registry = ModelRegistry(strict)
    assert registry.aliases()["champion"] == "1"
    newest = registry.versions()[-1]
    assert newest.tags["gates_passed"] == "false" and registry.aliases()["challenger"] == str(newest.version)
    decision = registry.read_audit()
    blocked = [e for e in decision if e.version == str(newest.version) and e.action == "kept"]
    assert blocked and "auc_floor" in (blocked[-1].reason or "")

    # The failed run is alerted as a blocked retraining naming the gate (a webhook on a loopback port).
    [sensor] = [s for s in build_sensors(AutomationSettings()) if s.name == "run_failure_alerts"]
    with Receiver() as receiver:
        alerting = strict.model_copy(
            update={"alerts": AlertSettings(webhook_url=receiver.url, webserver_base_url="http://ui.example")}
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"settings": alerting},
        ).for_run_failure()
        sensor(context)
        sensor(context)  # the same run again: sent once
    [post] = receiver.posts
    assert post["blocks"][0]["text"]["text"] == "churnops: Retraining blocked by promotion gates"
    assert "auc_floor: " in post["text"] and f"http://ui.example/runs/{result.run_id}" in post["text"]
