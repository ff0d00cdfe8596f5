"""Optuna study in RDB storage: budgets, resume, and a usable best configuration."""

from __future__ import annotations

import optuna
import pytest

from churn_assets.modeling.splits import assign_stratified, build_splits
from churn_assets.modeling.tuning import tune_lightgbm, tune_xgboost
from tests.modeling_helpers import synthetic_churn


@pytest.fixture(scope="module")
def splits():
    X, y, _ = synthetic_churn(1200, seed=5)
    return build_splits(X, y, assign_stratified(y, seed=5))


def test_rerun_with_same_study_name_resumes_from_sqlite(tmp_path, splits) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tune_lightgbm(splits, storage, "resume-me", n_trials=3, timeout_seconds=60)
    assert first.n_run_now == 3
    first_numbers = [t.params for t in optuna.load_study(study_name="resume-me", storage=storage).trials]

    second = tune_lightgbm(splits, storage, "resume-me", n_trials=5, timeout_seconds=60)
    study = optuna.load_study(study_name="resume-me", storage=storage)
    assert second.n_run_now == 2  # n_trials is the study's total budget: only the missing ones ran
    assert len(study.trials) == 5
    assert [t.params for t in study.trials[:3]] == first_numbers
    assert second.best_val_auc >= first.best_val_auc

    third = tune_lightgbm(splits, storage, "resume-me", n_trials=5, timeout_seconds=60)
    assert third.n_run_now == 0


def test_best_params_are_lightgbm_ready_and_record_imbalance(tmp_path, splits) -> None:
    result = tune_lightgbm(splits, f"sqlite:///{tmp_path / 'o.db'}", "s", n_trials=4, timeout_seconds=60)
    assert result.best_params["n_estimators"] >= 1
    assert result.imbalance in {"none", "balanced"}
    assert result.imbalance_auc and all(0.5 < v <= 1 for v in result.imbalance_auc.values())
    assert 0.7 < result.best_val_auc <= 1


def test_timeout_bounds_the_study(tmp_path, splits) -> None:
    result = tune_lightgbm(splits, f"sqlite:///{tmp_path / 't.db'}", "t", n_trials=10_000, timeout_seconds=3)
    assert 1 <= result.n_run_now < 10_000


def test_xgboost_study_resumes_and_its_best_params_refit_to_the_same_validation_auc(tmp_path, splits) -> None:
    from sklearn.metrics import roc_auc_score

    from churn_assets.modeling.candidates import fit_candidate, xgboost_spec
    from churn_assets.modeling.tuning import xgboost_params

    storage = f"sqlite:///{tmp_path / 'x.db'}"
    first = tune_xgboost(splits, storage, "xgb", n_trials=4, timeout_seconds=60)
    assert first.n_run_now == 4 and first.n_complete >= 1
    again = tune_xgboost(splits, storage, "xgb", n_trials=4, timeout_seconds=60)
    assert again.n_run_now == 0 and again.best_params == first.best_params
    assert first.imbalance in {"none", "balanced"} and first.best_params["n_estimators"] >= 1
    # The best trial's parameters with its best round count reproduce its validation AUC.
    spec = xgboost_spec(xgboost_params(first.best_params, splits))
    refit = fit_candidate(spec, splits, "none").model
    val_auc = roc_auc_score(splits.y_val, refit.predict_proba(splits.X_val)[:, 1])
    assert val_auc == pytest.approx(first.best_val_auc, abs=1e-6)
