"""The library pipeline on a time-split synthetic world: train, register, promote, then a retrain."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from churn_assets.modeling.candidate_stage import run_candidates, run_retraining_candidates
from churn_assets.modeling.challenger_stage import evaluate_challenger
from churn_assets.modeling.gates import GATES
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.splits import assign_by_period, build_splits
from churn_assets.modeling.train_table import train_and_register, train_from_frame
from tests.modeling_helpers import modeling_settings, synthetic_churn

# The synthetic features are not the feature store's: the production model name would refuse them.
NAME = "synthetic-churn"


@pytest.mark.e2e
def test_train_register_promote_then_retrain_is_kept(tmp_path) -> None:
    X, y, period = synthetic_churn(3000, seed=11)
    context = pd.DataFrame({"region": ["north", "south"] * 1500})
    # ~500 test rows: 10 reliability bins of ~50 rows have a standard error of ~0.06 each, so the
    # calibration limit is widened like the fairness one (the production defaults stay in settings).
    settings = modeling_settings(
        tmp_path / "home", n_trials=3, gate_max_disparity=0.5, gate_max_calibration_error=0.15
    )
    kwargs = {
        "baselines": ("logistic_regression",),
        "timeout_seconds": 60,
        "context": context,
        "model_name": NAME,
    }

    first = train_from_frame(X, y, assign_by_period(period), settings, data_hash="a" * 64, **kwargs)
    assert first.semver == "1.0.0" and first.promotion == "promoted", first.promotion_reason
    assert first.test_auc > 0.75
    families = {"lightgbm", "xgboost", "logistic_regression", "spline_logistic_regression"}
    assert families <= set(first.val_auc) <= families | {"ensemble"}
    assert set(first.selectable) >= families  # an ensemble whose out-of-fold AUC falls short is not
    assert first.best_model == max(first.selectable, key=first.val_auc.__getitem__)  # chosen on validation
    assert first.fairness_column in {"segment", "region"}
    assert set(first.stress) == {"new_customers", "high_value"}  # tenure / monthly_charges slices
    assert set(first.gates) == set(GATES)  # the Dagster graph's seven gates: one code path
    assert first.shap_top5_share is None or 0 < first.shap_top5_share <= 1

    run = mlflow.get_run(first.run_ids["logistic_regression"])
    assert {"auc", "recall", "precision", "f1", "brier", "train_seconds"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/roc.png", "plots/calibration.png"}
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()
    final = next(k for k in first.run_ids if k.startswith("final:"))
    final_files = {a.path for a in mlflow.MlflowClient().list_artifacts(first.run_ids[final], "evaluation")}
    assert final_files == {"evaluation/fairness_by_segment.csv"}

    # Same data, same (already finished) study: an equal model cannot beat the champion by > 0.02.
    second = train_from_frame(X, y, assign_by_period(period), settings, data_hash="a" * 64, **kwargs)
    assert second.promotion == "kept" and "not > 0.02" in second.promotion_reason
    registry = ModelRegistry(settings, name=NAME)
    assert registry.aliases() == {"champion": first.model_version, "challenger": second.model_version}
    assert registry.read_audit()[-1].metrics["champion_auc"] == pytest.approx(first.test_auc, abs=0.02)


@pytest.mark.e2e
def test_retrain_refits_with_the_champions_hyperparameters_without_tuning(tmp_path) -> None:
    X, y, period = synthetic_churn(2000, seed=5)
    # Gates relaxed: this test is about which parameters a retrain uses, not about promotion rules.
    loose = {
        "gate_max_calibration_error": 1.0,
        "gate_min_recall": 0.0,
        "gate_max_auc_gap": 1.0,
        "gate_min_slice_auc": 0.0,
        "gate_max_disparity": 1.0,
    }
    # LightGBM alone (no XGBoost, extra candidates or ensemble): the test follows its parameters.
    lightgbm_only = {"xgboost": False, "extra_candidates": [], "ensemble_max_members": 0}
    settings = modeling_settings(tmp_path / "home", n_trials=3, timeout_seconds=60, **loose, **lightgbm_only)
    splits = build_splits(X, y, assign_by_period(period), kind="time")
    first = train_and_register(splits, settings, data_hash="a" * 64, baselines=(), model_name=NAME)
    assert first.promotion == "promoted", first.promotion_reason
    registry = ModelRegistry(settings, name=NAME)
    champion_params = registry.lightgbm_params("champion")
    assert champion_params == first.tuning["best_params"]  # search-space form, incl. n_estimators

    newer = build_splits(*synthetic_churn(2000, seed=6)[:2], assign_by_period(period), kind="time")
    # What the training/candidates asset runs, then the challenger step.
    stage = run_retraining_candidates(
        newer, settings, "b" * 64, tmp_path / "retrain", baselines=(), model_name=NAME
    )
    challenger = evaluate_challenger(
        stage, newer, settings, "b" * 64, tmp_path / "retrain-challenger", model_name=NAME
    )
    assert stage.tuning["study"] is None and stage.tuning["run_now"] == 0  # no Optuna study ran
    assert stage.lightgbm_params == champion_params
    assert stage.params["n_estimators"] == champion_params["n_estimators"]
    assert challenger.version == "2" and registry.aliases()["challenger"] == "2"
    assert registry.lightgbm_params("challenger") == champion_params

    retune = settings.model_copy(
        update={"modeling": settings.modeling.model_copy(update={"retune_on_retrain": True})}
    )
    stage = run_retraining_candidates(
        newer, retune, "b" * 64, tmp_path / "retune", baselines=(), model_name=NAME
    )
    assert stage.tuning["study"] == "churn-lightgbm-bbbbbbbb" and stage.tuning["run_now"] == 3


def test_candidates_compared_on_an_eval_sample_winner_scored_in_full(tmp_path) -> None:
    """eval_rows < split sizes: every candidate is compared on the same stratified val/test sample; the
    winner's saved scores cover the full val and test splits and a sample of train (train_index)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    X, y, period = synthetic_churn(3000, seed=5)
    splits = build_splits(X, y, assign_by_period(period))
    settings = modeling_settings(
        tmp_path / "home", n_trials=2, timeout_seconds=60, eval_rows=300, baselines=["logistic_regression"]
    )
    stage = run_candidates(splits, settings, tmp_path / "work", study_name="eval-sample")
    for name, run_id in stage.run_ids.items():
        metrics = mlflow.get_run(run_id).data.metrics
        assert metrics["eval_val_rows"] == metrics["eval_test_rows"] == 300, name
    assert stage.tuning["eval_val_rows"] == 300
    scores = stage.load_scores()
    best = stage.load_model()
    assert len(scores["proba_val"]) == len(splits.y_val) and len(scores["proba_test"]) == len(splits.y_test)
    np.testing.assert_allclose(scores["proba_test"], best.predict_proba(splits.X_test)[:, 1], rtol=1e-9)
    index = scores["train_index"]
    assert len(index) == len(scores["proba_train"]) == 300 and np.all(np.diff(index) > 0)
    rate = splits.y_train.iloc[index].mean()
    assert abs(rate - splits.y_train.mean()) < 0.01  # stratified
    np.testing.assert_allclose(
        scores["proba_train"], best.predict_proba(splits.X_train.iloc[index])[:, 1], rtol=1e-9
    )
    challenger = evaluate_challenger(
        stage, splits, settings, "b" * 64, tmp_path / "challenger", model_name=NAME
    )
    gap = challenger.measurements.train_test_gap
    assert gap.test_auc == pytest.approx(challenger.test_metrics["auc"])
    assert gap.train_auc is not None and 0.5 < gap.train_auc <= 1.0
    # The test AUC is over the FULL test split (the calibrated model ranks like its saved scores).
    full = roc_auc_score(splits.y_test, scores["proba_test"])
    assert challenger.test_metrics["auc"] == pytest.approx(full, abs=0.01)
