"""Scoring registered versions: fast LightGBM path == predict_proba, threshold labels, SHAP reasons,
calibrated / scikit-learn models, registry-backed rollout rollback."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from churn_assets.modeling.candidates import baseline_specs
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.training_set import feature_names
from churn_assets.serving.rollout import RolloutStore
from churn_assets.serving.scoring import ScoringError, ScoringModel, feature_hash, load_alias, load_version
from tests.modeling_helpers import synthetic_churn
from tests.serving_helpers import (
    ensemble_model,
    feature_frame,
    register,
    register_models,
    serving_settings,
    train_model,
)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    settings = serving_settings(tmp_path_factory.mktemp("scoring"))
    previous, champion = register_models(settings)
    return settings, previous, champion


def test_champion_loads_with_features_and_threshold_and_scores_like_predict_proba(registered) -> None:
    settings, previous, champion = registered
    model = load_alias(settings, "champion")
    assert (model.version, model.threshold, model.features) == (champion, 0.5, feature_names())
    assert load_version(settings, previous).threshold == 0.4
    frame = feature_frame(range(1, 201), seed=0)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    rows[0]["plan_type"] = "never-seen-category"  # unknown category -> missing, as LightGBM does
    rows[1]["tenure_days"] = None
    scored = model.score(rows, explain=True)
    reference = frame.copy()
    reference.loc[0, "plan_type"] = np.nan
    reference.loc[1, "tenure_days"] = np.nan
    expected = model.model.predict_proba(reference[model.features])[:, 1]
    np.testing.assert_allclose(scored.scores, expected, rtol=1e-9)
    np.testing.assert_array_equal(scored.labels, (expected >= 0.5).astype(np.int8))
    assert scored.reasons is not None and all(len(r) == 3 for r in scored.reasons)
    top = scored.reasons[5]
    assert abs(top[0]["contribution"]) >= abs(top[1]["contribution"]) >= abs(top[2]["contribution"])
    assert {r["feature"] for r in top} <= set(model.features)
    # Batch path (a pandas frame, built column-wise): the same scores, labels and reasons as row dicts.
    batch_in = frame.copy()
    batch_in["plan_type"] = batch_in["plan_type"].astype(object)
    batch_in.loc[0, "plan_type"] = "never-seen-category"
    batch_in.loc[1, "tenure_days"] = np.nan
    batch = model.score(batch_in, explain=True)
    np.testing.assert_allclose(batch.scores, scored.scores, rtol=1e-12)
    np.testing.assert_array_equal(batch.labels, scored.labels)
    assert batch.reasons == scored.reasons


def test_one_row_requests_score_like_predict_proba(registered) -> None:
    """A one-row score (LightGBM's single-row C API) equals the booster's batch prediction, row by row,
    unknown categories and nulls included, also after the model is copied."""
    import copy
    import pickle

    settings, _, _ = registered
    model = load_alias(settings, "champion")
    frame = feature_frame(range(1, 61), seed=3)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    rows[0]["plan_type"] = "never-seen-category"
    rows[1]["tenure_days"] = None
    reference = frame.copy()
    reference.loc[0, "plan_type"] = np.nan
    reference.loc[1, "tenure_days"] = np.nan
    expected = model.model.predict_proba(reference[model.features])[:, 1]
    one_by_one = np.array([model.score([row]).scores[0] for row in rows])
    np.testing.assert_allclose(one_by_one, expected, rtol=1e-12)
    np.testing.assert_allclose(model.score(rows).scores, expected, rtol=1e-12)
    assert model._single is not None  # the one-row path was taken
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_allclose([twin.score([row]).scores[0] for row in rows], expected, rtol=1e-12)


def test_calibrated_and_sklearn_models_score_through_the_frame_path() -> None:
    X, y, _ = synthetic_churn(800, seed=3)
    lgbm = lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(X, y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(lgbm), method="sigmoid").fit(X, y)
    features = list(X.columns)
    rows = X.head(50).astype(object).to_dict("records")
    fast = ScoringModel("m", "1", lgbm, features, 0.3)
    np.testing.assert_allclose(fast.score(rows).scores, lgbm.predict_proba(X.head(50))[:, 1], rtol=1e-9)
    cal = ScoringModel("m", "2", calibrated, features, 0.3, flavor="sklearn")
    scored = cal.score(rows, explain=True)
    np.testing.assert_allclose(scored.scores, calibrated.predict_proba(X.head(50))[:, 1], rtol=1e-9)
    assert scored.reasons is not None and len(scored.reasons[0]) == 3  # booster inside the wrapper
    pipe = next(s for s in baseline_specs(["logistic_regression"])).build().fit(X, y)
    sk = ScoringModel("m", "3", pipe, features, 0.3, flavor="sklearn")
    out = sk.score(rows, explain=True)
    np.testing.assert_allclose(out.scores, pipe.predict_proba(X.head(50))[:, 1], rtol=1e-9)
    assert out.reasons == [[] for _ in rows]  # no SHAP for a non-tree model: empty reasons, not made up


def test_one_row_with_a_null_numeric_feature_scores_through_a_calibrated_model() -> None:
    """One request = one row: a numeric feature that is null in it is a missing number, not a category
    (LightGBM refuses a frame whose categorical columns differ from training's)."""
    X, y, _ = synthetic_churn(800, seed=5)
    lgbm = lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(X, y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(lgbm), method="isotonic").fit(X, y)
    features = list(X.columns)
    numeric = next(c for c in features if X[c].dtype.kind == "f")
    cal = ScoringModel("m", "2", calibrated, features, 0.3, flavor="sklearn")
    row = X.head(1).astype(object).to_dict("records")[0] | {numeric: None}
    reference = X.head(1).copy()
    reference.loc[reference.index[0], numeric] = np.nan
    np.testing.assert_allclose(cal.score([row]).scores, calibrated.predict_proba(reference)[:, 1], rtol=1e-9)


def test_an_ensemble_champion_is_scored_member_by_member_like_predict_proba(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path)
    frame = feature_frame(range(1, 601), seed=4)
    ensemble = ensemble_model(frame)
    version = register(settings, ensemble, threshold=0.45, auc=0.8, flavor="sklearn")
    model = load_alias(settings, "champion")  # through MLflow (skops) and the registry
    assert model.version == version
    assert [(name, weight) for name, weight, _ in model.members] == [
        ("lightgbm", 0.5),
        ("xgboost", 0.3),
        ("logistic_regression", 0.2),
    ]
    assert model.members[0][2]._fast  # the LightGBM member on the booster fast path
    # Loaded through MLflow (skops), every member is scored on numpy arrays (no pandas frame).
    assert model.member_paths == {
        "lightgbm": "lightgbm",
        "xgboost": "xgboost",
        "logistic_regression": "linear",
    }
    test = feature_frame(range(601, 801), seed=5)
    rows = test.astype(object).where(test.notna(), None).to_dict("records")
    scored = model.score(rows, explain=True, top_k=4)
    expected = ensemble.predict_proba(test[model.features])[:, 1]
    np.testing.assert_allclose(scored.scores, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(scored.labels, (scored.scores >= 0.45).astype(np.int8))
    assert scored.member_seconds is not None
    assert set(scored.member_seconds) == {"lightgbm", "xgboost", "logistic_regression"}
    assert all(s > 0 for s in scored.member_seconds.values())
    # Reasons: the members' SHAP contributions (LightGBM pred_contrib, XGBoost pred_contribs), weighted
    # 0.5 / 0.3 and renormalised over those two members (logistic regression has none).
    blend = ensemble.calibrated_classifiers_[0].estimator.estimator
    lgbm_c = blend.members[0].predict(test[model.features], pred_contrib=True)[:, :-1]
    xgb_c = (
        blend.members[1]
        .get_booster()
        .predict(xgb.DMatrix(test[model.features], enable_categorical=True), pred_contribs=True)[:, :-1]
    )
    combined = (0.5 * lgbm_c + 0.3 * xgb_c) / 0.8
    assert scored.reasons is not None
    for i in (0, 7, 42):
        top = np.argsort(-np.abs(combined[i]))[:4]
        assert [r["feature"] for r in scored.reasons[i]] == [model.features[j] for j in top]
        np.testing.assert_allclose(
            [r["contribution"] for r in scored.reasons[i]], combined[i][top], atol=1e-5
        )
    # The batch path (a pandas frame) gives the same scores.
    np.testing.assert_allclose(model.score(test).scores, scored.scores, rtol=1e-9)
    # A category training never saw (a new signup cohort, every production quarter) is a missing value
    # for every member, XGBoost included (which raises on it unless told the training categories).
    unseen = [dict(rows[0], signup_cohort="2099Q1"), dict(rows[1], plan_type="never-sold")]
    reference = test.head(2).copy()
    reference.loc[reference.index[0], "signup_cohort"] = np.nan
    reference.loc[reference.index[1], "plan_type"] = np.nan
    np.testing.assert_allclose(
        model.score(unseen).scores, ensemble.predict_proba(reference[model.features])[:, 1], rtol=1e-6
    )
    batch = test.head(2).astype({"signup_cohort": object, "plan_type": object})
    batch.loc[batch.index[0], "signup_cohort"], batch.loc[batch.index[1], "plan_type"] = (
        "2099Q1",
        "never-sold",
    )
    np.testing.assert_allclose(model.score(batch).scores, model.score(unseen).scores, rtol=1e-9)
    # The registered model itself too (the champion re-scored on a newer holdout, batch evaluation).
    np.testing.assert_allclose(
        ensemble.predict_proba(
            batch[model.features].astype({"signup_cohort": "category", "plan_type": "category"})
        )[:, 1],
        model.score(unseen).scores,
        rtol=1e-6,
    )


def test_bad_models_and_inputs_are_named() -> None:
    X, y, _ = synthetic_churn(300, seed=1)
    lgbm = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)
    with pytest.raises(ScoringError, match="threshold"):
        ScoringModel("m", "1", lgbm, list(X.columns), 1.5)
    with pytest.raises(ScoringError, match="differ from tag 'features'"):
        ScoringModel("m", "1", lgbm, ["a", "b"], 0.5)
    pipe = next(s for s in baseline_specs(["logistic_regression"])).build().fit(X, y)
    with pytest.raises(ScoringError, match=r"misses feature column\(s\) \['segment'\]"):
        ScoringModel("m", "1", pipe, list(X.columns), 0.5).score(
            [{"tenure": 1, "contract": "monthly", "monthly_charges": 5.0, "support_tickets": 0}]
        )
    assert feature_hash({"a": 1, "b": "x"}, ["a", "b"]) == feature_hash({"b": "x", "a": 1}, ["a", "b"])


def test_rollout_rollback_rolls_the_registry_back(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path)
    frame = feature_frame(range(1, 301))
    v1 = register(settings, train_model(frame, 1, n_estimators=5), 0.4, 0.75)
    v2 = register(settings, train_model(frame, 2, n_estimators=5), 0.5, 0.9)
    registry = ModelRegistry(settings)
    assert registry.aliases() == {"champion": v2, "previous": v1}
    store = RolloutStore(settings)
    store.start(v2, v1)
    store.advance()
    state = store.rollback(by="dave", reason="canary error rate")
    assert (state.phase, state.stable_version) == ("none", v1)
    assert registry.aliases() == {"champion": v1, "previous": v2}
    assert registry.read_audit()[-1].action == "rollback"


def test_served_ensemble_members_on_arrays_equal_predict_proba_to_1e_9() -> None:
    """Every member family of an ensemble is scored on numpy arrays (no pandas frame) and the served
    scores equal the fitted ensemble's ``predict_proba`` within 1e-9: missing numbers, missing
    categories and categories training never saw (missing for every member), rows and frames alike."""
    members = ("lightgbm", "xgboost", "spline_logistic_regression", "logistic_regression")
    ensemble = ensemble_model(
        feature_frame(range(1, 801), seed=6), members=members, weights=(0.4, 0.3, 0.2, 0.1)
    )
    features = feature_names()
    model = ScoringModel("m", "1", ensemble, features, 0.5, flavor="sklearn")
    assert model.member_paths == {
        "lightgbm": "lightgbm",
        "xgboost": "xgboost",
        "spline_logistic_regression": "linear",
        "logistic_regression": "linear",
    }
    test = feature_frame(range(801, 1801), seed=7)[features]
    categorical = [c for c in features if isinstance(test[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in features if c not in categorical]
    test = test.astype(dict.fromkeys(categorical, object))
    rng = np.random.default_rng(0)
    for col in numeric[:5]:
        test.loc[rng.random(len(test)) < 0.1, col] = np.nan
    for col in categorical[:3]:
        test.loc[rng.random(len(test)) < 0.1, col] = None
        test.loc[rng.random(len(test)) < 0.05, col] = "never-seen"
    reference = test.astype(dict.fromkeys(categorical, "category"))
    expected = ensemble.predict_proba(reference)[:, 1]
    rows = test.astype(object).where(test.notna(), None).to_dict("records")
    np.testing.assert_allclose(model.score(rows).scores, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.score(test).scores, expected, rtol=0, atol=1e-9)
    one = [model.score([row]).scores[0] for row in rows[:50]]  # one-row requests (one-thread paths)
    np.testing.assert_allclose(one, expected[:50], rtol=0, atol=1e-9)
