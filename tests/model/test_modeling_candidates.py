"""Candidates fit on a small synthetic dataset and record the class-imbalance choice."""

from __future__ import annotations

import numpy as np
import pytest

from churn_assets.modeling.candidates import (
    BASELINES,
    EXTRA_CANDIDATES,
    baseline_specs,
    fit_candidate,
    fit_spec,
    lightgbm_options,
    lightgbm_spec,
    prepare,
    quantization_safe,
    with_options,
)
from churn_assets.modeling.splits import assign_stratified, build_splits
from tests.modeling_helpers import synthetic_churn


@pytest.fixture(scope="module")
def splits():
    X, y, _ = synthetic_churn(1500, seed=3)
    return build_splits(X, y, assign_stratified(y, seed=3))


@pytest.mark.parametrize("name", BASELINES + EXTRA_CANDIDATES)
def test_baseline_learns_the_signal_and_records_imbalance_choice(splits, name) -> None:
    (spec,) = baseline_specs(seed=0, names=(name,))
    fitted = fit_candidate(spec, splits, "compare")
    assert fitted.val_auc > 0.7
    assert set(fitted.val_auc_by_imbalance) == {"none", "balanced"}
    assert fitted.imbalance == max(
        ("none", "balanced"), key=lambda c: (fitted.val_auc_by_imbalance[c], c == "none")
    )
    assert fitted.params["imbalance"] == fitted.imbalance
    assert fitted.predict_proba(splits.X_test).shape == (len(splits.y_test),)


@pytest.mark.parametrize("name", ["logistic_regression", "spline_logistic_regression", "random_forest"])
@pytest.mark.parametrize("imbalance", ["none", "balanced"])
def test_shared_preprocessing_gives_the_model_a_full_pipeline_fit_gives(splits, name, imbalance) -> None:
    """Both imbalance variants reuse one fitted preprocessing (it never sees labels or weights): the
    assembled pipeline predicts exactly what fitting the whole pipeline predicts."""
    (spec,) = baseline_specs(seed=0, names=(name,))
    prepared = prepare(spec, splits)
    assert prepared is not None and prepared.X_train.shape[0] == len(splits.y_train)
    shared, shared_auc, _ = fit_spec(spec, splits, imbalance, prepared=prepared)
    whole, whole_auc, _ = fit_spec(spec, splits, imbalance)
    assert shared_auc == pytest.approx(whole_auc, abs=1e-12)
    assert np.allclose(shared.predict_proba(splits.X_test), whole.predict_proba(splits.X_test), atol=1e-12)
    assert [n for n, _ in shared.steps] == [n for n, _ in whole.steps]


def test_a_pipeline_without_preprocessing_is_fitted_whole(splits) -> None:
    (spec,) = baseline_specs(seed=0, names=("hist_gradient_boosting",))
    assert prepare(spec, splits) is None


def test_lightgbm_candidate_uses_categoricals_natively(splits) -> None:
    fitted = fit_candidate(lightgbm_spec({"n_estimators": 50, "learning_rate": 0.1}), splits, "none")
    assert fitted.flavor == "lightgbm"
    assert fitted.val_auc > 0.7
    assert "contract" in fitted.model.booster_.feature_name()


def test_unknown_baseline_is_named() -> None:
    with pytest.raises(ValueError, match="xgboost"):
        baseline_specs(names=("xgboost",))


def test_lightgbm_training_options_reach_the_booster_but_not_the_logged_params(splits) -> None:
    params = {"n_estimators": 50, "learning_rate": 0.1}
    assert lightgbm_options(True, n_rows=999, min_rows=1000) == {}
    assert lightgbm_options(False, n_rows=10**7, min_rows=1000) == {}
    quantized = fit_candidate(lightgbm_spec(params, options=lightgbm_options(True)), splits, "none")
    exact = fit_candidate(lightgbm_spec(params, options=lightgbm_options(False)), splits, "none")
    booster_params = quantized.model.booster_.params
    assert booster_params["use_quantized_grad"] is True
    assert booster_params["quant_train_renew_leaf"] is True
    assert "use_quantized_grad" not in exact.model.booster_.params
    assert set(quantized.params) == {"n_estimators", "learning_rate", "imbalance"}
    # Quantized training is an approximation of the same model, not a different one.
    assert quantized.val_auc > 0.7
    assert abs(quantized.val_auc - exact.val_auc) < 0.03


@pytest.mark.parametrize(
    ("quantized", "min_rows", "expected"), [(True, 1, True), (False, 1, False), (True, 10**6, False)]
)
def test_the_pipeline_refit_follows_the_quantized_gradients_settings(
    splits, quantized, min_rows, expected
) -> None:
    from churn_assets.modeling.candidate_stage import fit_tuned_lightgbm
    from churn_assets.settings import ModelingSettings

    cfg = ModelingSettings(lightgbm_quantized_gradients=quantized, lightgbm_quantized_min_rows=min_rows)
    fitted = fit_tuned_lightgbm({"n_estimators": 30, "imbalance": "none"}, splits, cfg)
    assert fitted.model.booster_.params.get("use_quantized_grad", False) is expected


def test_a_quantized_fit_lightgbm_rejects_is_redone_with_exact_gradients(splits, caplog, monkeypatch) -> None:
    import lightgbm as lgb

    from churn_assets.modeling import candidate_stage
    from churn_assets.settings import ModelingSettings

    # LightGBM 4.x can fail a quantized fit ("Check failed: (best_split_info.left_count) > (0)", seen on
    # the Telco table); here the real fit is made to fail that way whenever it is quantized.
    real_fit = candidate_stage.fit_candidate
    attempts: list[bool] = []

    def fit_or_fail_quantized(spec, *args, **kwargs):
        quantized = bool(spec.build().get_params().get("use_quantized_grad"))
        attempts.append(quantized)
        if quantized:
            raise lgb.basic.LightGBMError("Check failed: (best_split_info.left_count) > (0)")
        return real_fit(spec, *args, **kwargs)

    monkeypatch.setattr(candidate_stage, "fit_candidate", fit_or_fail_quantized)
    cfg = ModelingSettings(lightgbm_quantized_gradients=True, lightgbm_quantized_min_rows=1)
    fitted = candidate_stage.fit_tuned_lightgbm({"n_estimators": 30, "imbalance": "none"}, splits, cfg)
    assert attempts == [True, False]
    assert "use_quantized_grad" not in fitted.model.booster_.params
    assert fitted.val_auc > 0.7
    assert "refitting with exact gradients" in caplog.text


@pytest.mark.parametrize(
    ("params", "safe"),
    [
        ({}, True),
        ({"learning_rate": 0.05, "num_leaves": 31}, True),
        ({"subsample": 0.8}, True),  # no bagging without a frequency
        ({"subsample": 1.0, "subsample_freq": 1, "colsample_bytree": 1.0}, True),
        ({"subsample": 0.8, "subsample_freq": 1}, False),
        ({"bagging_fraction": 0.7, "bagging_freq": 5}, False),
        ({"pos_bagging_fraction": 1.0, "neg_bagging_fraction": 0.3, "bagging_freq": 1}, False),
        ({"neg_bagging_fraction": 0.3}, True),  # no bagging without a frequency
        ({"colsample_bytree": 0.6}, False),
        ({"feature_fraction": 0.9}, False),
        ({"colsample_bynode": 0.5}, False),
        ({"data_sample_strategy": "goss"}, False),
        ({"boosting_type": "goss"}, False),
    ],
)
def test_quantized_training_is_kept_off_row_and_column_sampling(params, safe) -> None:
    assert quantization_safe(params) is safe
    options = with_options(params, lightgbm_options(True))
    assert ("use_quantized_grad" in options) is safe
    assert with_options(params, None) == {}


def test_a_tuned_fit_that_bags_rows_uses_exact_gradients(splits, caplog) -> None:
    import logging

    from churn_assets.modeling.candidate_stage import fit_tuned_lightgbm
    from churn_assets.settings import ModelingSettings

    cfg = ModelingSettings(lightgbm_quantized_gradients=True, lightgbm_quantized_min_rows=1)
    tuned = {
        "n_estimators": 30,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.7,
        "imbalance": "none",
    }
    with caplog.at_level(logging.INFO):
        fitted = fit_tuned_lightgbm(tuned, splits, cfg)
    booster = fitted.model.booster_.params
    assert "use_quantized_grad" not in booster
    assert booster["subsample"] == pytest.approx(0.8)  # the tuned bagging itself is kept
    assert "exact gradients (quantized training unsafe)" in caplog.text
    # the same spec through lightgbm_spec directly: the quantized options are dropped there too
    lgbm_kwargs = {k: v for k, v in tuned.items() if k != "imbalance"}
    direct = fit_candidate(lightgbm_spec(lgbm_kwargs, options=lightgbm_options(True)), splits, "none")
    assert "use_quantized_grad" not in direct.model.booster_.params
