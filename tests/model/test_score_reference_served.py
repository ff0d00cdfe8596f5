"""A registered version scores its own validation rows the way its ``score_reference`` says it did.

The rollout review compares a candidate's live scores with the reference registered with it
(``modeling.score_reference``), and its live labels with the reference's positive rate. Served on the very
rows the reference was computed on, a version must therefore pass that comparison by construction: same
positive rate, a KS of the sketch's accuracy.

The model here is calibrated the way ``evaluation.calibrate`` calibrates when it chooses
``isotonic_ranked``: isotonic plateaus broken by a ``TIE_BREAK_WEIGHT`` share of the raw score, so the
scores inside a plateau differ only in their 7th-8th decimals and the F1-best threshold sits inside
one. The blends of the ENSEMBLE candidate (and XGBoost) are typically calibrated this way.
Real MLflow: the model is logged, registered with its threshold and reference, loaded back and served by
``serving.scoring``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from churn_assets.modeling.evaluation import GateResult, RankedIsotonic, choose_threshold
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.score_reference import REFERENCE_TAG, ScoreReference
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.serving.scoring import from_version
from tests.modeling_helpers import modeling_settings, synthetic_churn

FEATURES = ["tenure", "monthly_charges", "support_tickets"]


def test_served_validation_scores_match_the_registered_reference(tmp_path) -> None:
    X, y, _ = synthetic_churn(n=4000, seed=3)
    X = X[FEATURES].astype("float64")
    X_train, y_train, X_val, y_val = X.iloc[:2000], y.iloc[:2000], X.iloc[2000:], y.iloc[2000:]
    raw = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    model = CalibratedClassifierCV(FrozenEstimator(raw), method="isotonic").fit(X_val, y_val)
    response = raw.decision_function(X_val)
    model.calibrated_classifiers_[0].calibrators[0] = RankedIsotonic(out_of_bounds="clip").fit(
        response, y_val
    )
    val_scores = np.asarray(model.predict_proba(X_val))[:, 1]
    threshold = choose_threshold(y_val, val_scores)
    near = np.abs(val_scores - threshold) < 1e-5
    assert near.sum() > 20, "the threshold sits inside an isotonic plateau (the case under test)"

    settings = modeling_settings(tmp_path)
    logged = log_candidate_run(configure(settings), "isotonic", model, "sklearn", {}, {"auc": 0.8})
    reference = ScoreReference.from_scores(val_scores, threshold)
    registry = ModelRegistry(settings, name="churn-model-reference")
    registered = registry.register(
        logged,
        FEATURES,
        data_hash="d" * 64,
        metrics={"auc": 0.8, "threshold": threshold},
        gates=[GateResult("min_test_auc", 0.8, 0.7, True)],
        extra_tags={REFERENCE_TAG: reference.to_tag()},
    )
    served = from_version(settings, registry.client.get_model_version(registry.name, registered.version))
    stored = ScoreReference.of_version(served.tags)
    assert stored is not None

    # The decision threshold as chosen, every digit: a plateau's scores differ from the 7th decimal on.
    assert served.threshold == threshold, (served.threshold, threshold)
    scored = served.score(pd.DataFrame(X_val))
    np.testing.assert_allclose(scored.scores, val_scores, rtol=0, atol=1e-12)
    # The labels the service logs are the reference's positives, row for row.
    assert float(np.mean(scored.labels)) == stored.positive_rate
    assert np.array_equal(scored.labels.astype(bool), val_scores >= threshold)
    # The same scores against their own sketch: a KS of the sketch's accuracy (501 quantiles: ~0.002).
    assert stored.ks(scored.scores) <= 0.005, stored.ks(scored.scores)
