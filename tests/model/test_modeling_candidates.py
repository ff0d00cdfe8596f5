"""Candidates fit on a small synthetic dataset and record the class-imbalance choice."""

from __future__ import annotations

import pytest

from churn_assets.modeling.candidates import BASELINES, baseline_specs, fit_candidate, lightgbm_spec
from churn_assets.modeling.splits import assign_stratified, build_splits
from tests.modeling_helpers import synthetic_churn


@pytest.fixture(scope="module")
def splits():
    X, y, _ = synthetic_churn(1500, seed=3)
    return build_splits(X, y, assign_stratified(y, seed=3))


@pytest.mark.parametrize("name", BASELINES)
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


def test_lightgbm_candidate_uses_categoricals_natively(splits) -> None:
    fitted = fit_candidate(lightgbm_spec({"n_estimators": 50, "learning_rate": 0.1}), splits, "none")
    assert fitted.flavor == "lightgbm"
    assert fitted.val_auc > 0.7
    assert "contract" in fitted.model.booster_.feature_name()


def test_unknown_baseline_is_named() -> None:
    with pytest.raises(ValueError, match="xgboost"):
        baseline_specs(names=("xgboost",))
