"""MLflow through dagster-mlflow, for real: the `training` job on a small simulated world opens ONE MLflow
parent run (tagged with the Dagster run id), nests every candidate and the challenger's final run under
it and ends it FINISHED -- FAILED when a blocking gate fails the run; the training assets link the runs and
the registered version in the MLflow UI; every logged model carries a signature.

Small world (600 customers, 8 snapshot months: train 1-4, val 5-6, test 7-8), one baseline, two Optuna
trials, gate limits opened wide (the world is too small for the production limits; what is tested here
is the tracking, not the model).
"""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import pytest
from mlflow.entities import Run

from churn_assets.defs.assets.training import CANDIDATES, CHALLENGER, CHAMPION
from churn_assets.modeling.tracking import configure, list_runs
from churn_assets.settings import ModelingSettings, Settings
from tests.pipeline_helpers import simulated_instance, small_settings, train

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

UI = "http://mlflow.test:5001"
OPEN_GATES: dict[str, object] = {
    "gate_min_auc": 0.5,
    "gate_max_auc_gap": 0.5,
    "gate_max_calibration_error": 0.5,
    "gate_min_recall": 0.0,
    "gate_max_shap_top5_share": 1.0,
    "gate_max_disparity": 1.0,
    "gate_min_slice_auc": 0.0,
}


def _with_modeling(settings: Settings, **overrides: object) -> Settings:
    modeling = ModelingSettings(
        **{  # type: ignore[arg-type]
            "train_periods": (1, 4),
            "val_periods": (5, 6),
            "test_periods": (7, 8),
            "n_trials": 2,
            "timeout_seconds": 60,
            "baselines": ["logistic_regression"],
            "shap_max_rows": 200,
            "mlflow_ui_url": UI,
            **OPEN_GATES,
            **overrides,
        }
    )
    return settings.model_copy(update={"modeling": modeling})


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, dg.MetadataValue]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return dict(event.materialization.metadata)


def _runs(settings: Settings) -> list[Run]:
    tracking = configure(settings)
    return list(tracking.client.search_runs([tracking.experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    settings = _with_modeling(small_settings(tmp_path_factory.mktemp("mlflow"), customers=600, months=8))
    instance = simulated_instance(settings)
    first = train(settings, instance)
    assert first.success
    return settings, instance, first


def test_one_parent_run_per_dagster_run_with_every_candidate_nested(world) -> None:
    settings, _, first = world
    runs = _runs(settings)
    [parent] = [r for r in runs if r.data.tags.get("dagster_run_id") == first.run_id]
    assert parent.info.run_name == "training"
    assert parent.info.status == "FINISHED" and parent.info.end_time is not None
    assert "mlflow.parentRunId" not in parent.data.tags
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    families = {"lightgbm", "xgboost", "logistic_regression", "spline_logistic_regression"}
    candidates = {r.data.tags["model"] for r in children if r.data.tags["role"] == "candidate"}
    assert families <= candidates <= families | {"ensemble"}
    assert parent.data.tags.get("churnops.experiment_table") == "true"  # the experiment table is on it
    assert [r.data.tags["role"] for r in children].count("final") == 1
    assert all(r.info.status == "FINISHED" for r in children)
    # Nothing of this Dagster run is logged outside its parent; artifacts stay in the state folder.
    assert {r.info.run_id for r in runs} == {parent.info.run_id} | {r.info.run_id for r in children}
    artifacts = (settings.mlflow_dir / "artifacts").resolve().as_uri()
    assert all(r.info.artifact_uri.startswith(artifacts) for r in runs)
    assert mlflow.active_run() is None  # the hook ended it: nothing left active in this process
    listed = {row["run_id"]: row["parent_run_id"] for row in list_runs(settings)}
    assert listed == {parent.info.run_id: None} | {r.info.run_id: parent.info.run_id for r in children}


def test_training_assets_link_the_mlflow_runs_and_model_versions(world) -> None:
    settings, _, first = world
    runs = _runs(settings)
    [parent] = [r for r in runs if r.data.tags.get("dagster_run_id") == first.run_id]
    experiment = parent.info.experiment_id
    parent_url = f"{UI}/#/experiments/{experiment}/runs/{parent.info.run_id}"
    by_model = {r.data.tags["model"]: r.info.run_id for r in runs if r.data.tags.get("role") == "candidate"}
    [final] = [r for r in runs if r.data.tags.get("role") == "final"]
    candidates, challenger, champion = (_metadata(first, k) for k in (CANDIDATES, CHALLENGER, CHAMPION))
    for meta in (candidates, challenger, champion):
        assert isinstance(meta["mlflow_parent_run"], dg.UrlMetadataValue)
        assert meta["mlflow_parent_run"].value == parent_url
    best = str(candidates["best"].value)
    assert candidates["mlflow_best_run"].value == f"{UI}/#/experiments/{experiment}/runs/{by_model[best]}"
    table = str(candidates["experiments"].value)
    assert all(f"({UI}/#/experiments/{experiment}/runs/{run_id})" in table for run_id in by_model.values())
    final_url = f"{UI}/#/experiments/{experiment}/runs/{final.info.run_id}"
    assert challenger["mlflow_run"].value == final_url and champion["mlflow_run"].value == final_url
    version = str(challenger["version"].value)
    assert challenger["mlflow_model_version"].value == f"{UI}/#/models/churn-model/versions/{version}"
    assert champion["mlflow_challenger_version"].value == f"{UI}/#/models/churn-model/versions/{version}"
    assert champion["decision"].value == "promoted"
    assert champion["mlflow_champion_version"].value == f"{UI}/#/models/churn-model/versions/{version}"


def test_every_logged_model_has_a_signature_and_an_input_example(world) -> None:
    settings, _, _ = world
    configure(settings)
    meta = json.loads((settings.home / "training" / "training_set.json").read_text())
    features = set(meta["features"])
    for r in _runs(settings):
        if not r.data.tags.get("role"):
            continue
        [output] = r.outputs.model_outputs
        model = mlflow.get_logged_model(output.model_id)
        info = mlflow.models.get_model_info(f"models:/{model.model_id}")
        assert info.signature is not None, r.data.tags["model"]
        assert set(info.signature.inputs.input_names()) == features
        assert info.saved_input_example_info is not None


def test_a_failing_run_ends_its_parent_run_failed(world) -> None:
    settings, instance, _ = world
    strict = _with_modeling(settings, gate_min_auc=0.999)
    failed = train(strict, instance)
    assert not failed.success
    [parent] = [r for r in _runs(strict) if r.data.tags.get("dagster_run_id") == failed.run_id]
    assert parent.info.status == "FAILED"
    children = [r for r in _runs(strict) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["role"] for r in children} == {"candidate", "final"}
    assert mlflow.active_run() is None
