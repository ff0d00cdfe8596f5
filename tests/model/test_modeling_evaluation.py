"""Metrics vs scikit-learn, the threshold rule, calibration choice, SHAP, fairness, stress, gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from churn_assets.modeling import evaluation
from churn_assets.modeling.candidates import fit_candidate, lightgbm_spec
from churn_assets.modeling.challenger_stage import measure_fairness, measure_stress_slices
from churn_assets.modeling.evaluation import (
    AUC_TOLERANCE,
    RankedIsotonic,
    binary_metrics,
    calibrate,
    choose_threshold,
    fairness_report,
    proba_and_response,
    reliability_curve,
    response,
    shap_summary,
)
from churn_assets.modeling.gates import (
    AucFloor,
    CalibrationMeasure,
    ChallengerMeasurements,
    Rates,
    ShapMeasure,
    ThresholdMeasure,
    TrainTestGap,
    gate_results,
)
from churn_assets.modeling.plots import calibration_plot, roc_plot, shap_bar_plot
from churn_assets.modeling.splits import Splits, assign_stratified, build_splits
from churn_assets.modeling.train_table import clean_table, read_table
from churn_assets.settings import ModelingSettings
from tests.modeling_helpers import TELCO_CSV, synthetic_churn

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 500)
P = np.clip(Y * 0.3 + RNG.random(500) * 0.7, 0, 1)


def test_metrics_match_sklearn() -> None:
    m = binary_metrics(Y, P, threshold=0.4)
    pred = (P >= 0.4).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["recall"] == pytest.approx(recall_score(Y, pred))
    assert m["precision"] == pytest.approx(precision_score(Y, pred))
    assert m["f1"] == pytest.approx(f1_score(Y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(Y, P))


def test_threshold_rule_maximises_validation_f1() -> None:
    t = choose_threshold(Y, P)
    best_f1 = max(f1_score(Y, (c <= P).astype(int)) for c in np.unique(P))
    assert f1_score(Y, (t <= P).astype(int)) == pytest.approx(best_f1)


def test_reliability_curve_of_a_calibrated_score_is_near_the_diagonal() -> None:
    p = RNG.random(20_000)
    y = (RNG.random(20_000) < p).astype(int)
    curve = reliability_curve(y, p)
    assert np.abs(np.array(curve.mean_predicted) - np.array(curve.observed_rate)).max() < 0.05


class _Squashed(LogisticRegression):
    """A deliberately miscalibrated classifier: probabilities are cubed."""

    def predict_proba(self, X):
        p = super().predict_proba(X)[:, 1] ** 3
        return np.column_stack([1 - p, p])


def test_calibration_is_used_only_when_it_lowers_validation_brier() -> None:
    X = pd.DataFrame({"x": RNG.normal(size=4000)})
    y = pd.Series((RNG.random(4000) < 1 / (1 + np.exp(-2 * X["x"]))).astype(int))
    fit, val = slice(0, 2000), slice(2000, 4000)
    bad = _Squashed().fit(X.iloc[fit], y.iloc[fit])
    cal = calibrate(bad, X.iloc[val], y.iloc[val])
    assert cal.method in {"isotonic_ranked", "sigmoid"}
    assert cal.brier[cal.method] < cal.brier["none"]
    assert brier_score_loss(y.iloc[val], cal.model.predict_proba(X.iloc[val])[:, 1]) < cal.brier["none"]

    # The final probabilities come from the raw model's saved scores, without predicting again.
    test = X.iloc[:2000]
    np.testing.assert_allclose(
        cal.apply(bad.predict_proba(test)[:, 1], response(bad, test)), cal.model.predict_proba(test)[:, 1]
    )
    same = calibrate(
        bad,
        X.iloc[val],
        y.iloc[val],
        proba_val=bad.predict_proba(X.iloc[val])[:, 1],
        response_val=response(bad, X.iloc[val]),
    )
    assert same.method == cal.method and same.brier == cal.brier

    good = LogisticRegression().fit(X.iloc[fit], y.iloc[fit])
    kept = calibrate(good, X.iloc[val], y.iloc[val])
    assert kept.brier[kept.method] == min(kept.brier.values())
    if kept.method == "none":
        assert kept.model is good


def test_ranked_isotonic_breaks_the_plateaus_by_the_raw_score() -> None:
    scores = RNG.normal(size=3000)
    y = (RNG.random(3000) < 1 / (1 + np.exp(-2 * scores))).astype(int)
    plain = IsotonicRegression(out_of_bounds="clip").fit(scores, y).predict(scores)
    ranked = RankedIsotonic(out_of_bounds="clip").fit(scores, y).predict(scores)
    assert len(np.unique(plain)) < 100  # plateaus: ties between different scores
    order = np.argsort(scores)
    assert np.all(np.diff(ranked[order]) > 0)  # strictly increasing: no ties, the raw ranking kept
    assert roc_auc_score(y, ranked) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert np.abs(ranked - plain).max() <= evaluation.TIE_BREAK_WEIGHT  # probabilities barely move


def _telco_splits() -> Splits:
    table = clean_table(read_table(TELCO_CSV), "Churn", "Yes")
    return build_splits(table.X, table.y, assign_stratified(table.y, seed=42), kind="stratified")


def _simulated_splits() -> Splits:
    X, y, _ = synthetic_churn(4000, seed=11)
    return build_splits(X, y, assign_stratified(y, seed=11))


@pytest.mark.parametrize("world", [_telco_splits, _simulated_splits], ids=["telco", "simulated"])
@pytest.mark.parametrize("balanced", [False, True], ids=["unweighted", "balanced"])
def test_calibration_never_lowers_validation_or_test_auc_by_more_than_0_001(world, balanced) -> None:
    splits = world()
    # A balanced-weighted model is miscalibrated on purpose (probabilities pushed up), so calibrating helps.
    fitted = fit_candidate(
        lightgbm_spec({"n_estimators": 150, "num_leaves": 15, "learning_rate": 0.05}),
        splits,
        "balanced" if balanced else "none",
    )
    model = fitted.model
    p_val, r_val = proba_and_response(model, splits.X_val)
    p_test, r_test = proba_and_response(model, splits.X_test)
    cal = calibrate(model, splits.X_val, splits.y_val, proba_val=p_val, response_val=r_val)
    assert cal.method not in cal.rejected
    for method, auc in cal.auc.items():  # every method that may be chosen keeps the validation ranking
        if method not in cal.rejected:
            assert auc >= cal.auc["none"] - AUC_TOLERANCE, method
    raw_val, raw_test = roc_auc_score(splits.y_val, p_val), roc_auc_score(splits.y_test, p_test)
    final_val = roc_auc_score(splits.y_val, cal.apply(p_val, r_val))
    final_test = roc_auc_score(splits.y_test, cal.apply(p_test, r_test))
    assert final_val >= raw_val - AUC_TOLERANCE
    assert final_test >= raw_test - AUC_TOLERANCE
    np.testing.assert_allclose(cal.apply(p_test, r_test), cal.model.predict_proba(splits.X_test)[:, 1])
    if balanced:
        assert cal.method != "none" and cal.brier[cal.method] < cal.brier["none"]


def test_a_calibrator_that_costs_ranking_is_rejected(monkeypatch) -> None:
    X = pd.DataFrame({"x": RNG.normal(size=4000)})
    y = pd.Series((RNG.random(4000) < 1 / (1 + np.exp(-2 * X["x"]))).astype(int))
    squashed = _Squashed().fit(X.iloc[:2000], y.iloc[:2000])
    fit = evaluation._fit_calibrator

    class Coarse:  # a well-calibrated map onto 3 values: it would lower Brier but ties cost ranking
        def __init__(self, inner):
            self.inner = inner

        def predict(self, scores):
            return np.round(self.inner.predict(scores) * 2) / 2

    monkeypatch.setattr(
        evaluation,
        "_fit_calibrator",
        lambda method, s, t: Coarse(fit(method, s, t)) if method == "sigmoid" else fit(method, s, t),
    )
    cal = calibrate(squashed, X.iloc[2000:], y.iloc[2000:])
    assert cal.rejected == ["sigmoid"]
    assert cal.auc["none"] - cal.auc["sigmoid"] > AUC_TOLERANCE
    assert cal.method == "isotonic_ranked"


@pytest.fixture(scope="module")
def lgbm_and_splits():
    X, y, _ = synthetic_churn(1500, seed=7)
    splits = build_splits(X, y, assign_stratified(y, seed=7))
    return fit_candidate(lightgbm_spec({"n_estimators": 80}), splits, "none").model, splits


def test_one_lightgbm_pass_gives_its_probability_and_calibration_score(lgbm_and_splits) -> None:
    model, splits = lgbm_and_splits
    proba, raw = proba_and_response(model, splits.X_test)
    np.testing.assert_allclose(proba, model.predict_proba(splits.X_test)[:, 1], rtol=1e-12)
    np.testing.assert_allclose(raw, response(model, splits.X_test), rtol=1e-12)  # = decision_function
    lr = LogisticRegression().fit(splits.X_train.select_dtypes("number"), splits.y_train)
    proba, score = proba_and_response(lr, splits.X_test.select_dtypes("number"))
    np.testing.assert_allclose(score, lr.decision_function(splits.X_test.select_dtypes("number")))


def test_shap_values_explain_the_margin_and_top5_share(lgbm_and_splits) -> None:
    model, splits = lgbm_and_splits
    contrib = model.predict(splits.X_test, pred_contrib=True)
    margin = model.predict(splits.X_test, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, rtol=1e-6, atol=1e-6)
    summary = shap_summary(model, splits.X_test)
    assert summary.mean_abs.index[0] in {"tenure", "contract"}  # the two strongest simulated drivers
    assert summary.top5_share == pytest.approx(1.0)  # only 5 features


def test_fairness_stress_and_gates(lgbm_and_splits, tmp_path) -> None:
    model, splits = lgbm_and_splits
    p = model.predict_proba(splits.X_test)[:, 1]
    report = fairness_report(splits.y_test, p, 0.3, splits.X_test[["segment"]], max_disparity=0.5)
    assert set(report.by_segment["value"]) == {"consumer", "business"}
    recalls = report.by_segment.set_index("value")["recall"]
    assert report.max_disparity == pytest.approx(recalls.max() - recalls.min())
    strict = fairness_report(splits.y_test, p, 0.3, splits.X_test[["segment"]], max_disparity=-1)
    assert not strict.passed

    # The challenger step's slice rules: first tenure column at or below its 10th percentile (no
    # tenure_days here), revenue in its top decile.
    cfg = ModelingSettings(gate_min_auc=0.7, gate_max_auc_gap=0.08, gate_max_disparity=0.5)
    stress = measure_stress_slices(splits.y_test, p, 0.3, splits.X_test, cfg)
    assert set(stress) == {"new_customers", "high_value"}
    assert stress["high_value"].rows == pytest.approx(len(p) / 10, abs=3)
    tenure = splits.X_test["tenure"].to_numpy()
    assert stress["new_customers"].rows == int((tenure <= np.quantile(tenure, 0.1)).sum())
    fairness, full = measure_fairness(splits.y_test, p, 0.3, splits.X_test, cfg)
    assert fairness.columns == ["segment"] and full is not None
    assert fairness.max_disparity == pytest.approx(report.max_disparity)

    # The production gates over these measurements: AUC floor passes, a 0.15 train-test gap fails.
    rates = Rates(recall=0.6, precision=0.5, f1=0.55)
    measurements = ChallengerMeasurements(
        auc_floor=AucFloor(test_auc=0.8),
        train_test_gap=TrainTestGap(train_auc=0.95, test_auc=0.8, gap=0.15),
        calibration=CalibrationMeasure(
            "none", {"none": 0.1}, 0.1, 0.2, 0.01, reliability_curve(splits.y_test, p)
        ),
        threshold=ThresholdMeasure("max F1", 0.3, rates, rates, test_positive_rate=0.3),
        shap=ShapMeasure(method="not applicable"),
        fairness=fairness,
        stress_slices=stress,
    )
    gates = {g.name: g.passed for g in gate_results(measurements, cfg)}
    assert gates == {
        "auc_floor": True,
        "train_test_gap": False,
        "calibration": True,
        "threshold": True,
        "shap": True,
        "fairness": report.passed,
        "stress_slices": min(s.auc or 1.0 for s in stress.values()) >= cfg.gate_min_slice_auc,
    }
    for plot in (
        roc_plot(splits.y_test, p, tmp_path / "roc.png"),
        calibration_plot(splits.y_test, p, tmp_path / "cal.png"),
        shap_bar_plot(shap_summary(model, splits.X_test).mean_abs, tmp_path / "shap.png"),
    ):
        assert plot.read_bytes()[:4] == b"\x89PNG"
