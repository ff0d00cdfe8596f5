"""Metrics, decision threshold, calibration, SHAP, fairness, and the result type of a promotion gate.

Threshold rule (documented in docs/modeling.md): the decision threshold is the one that MAXIMISES F1
on the validation split, searched over the distinct predicted probabilities
(``sklearn.metrics.precision_recall_curve``); ties go to the higher threshold (fewer contacts). It is
chosen after calibration, on the calibrated validation scores, and then applied unchanged to test.

Calibration choice: sigmoid (Platt) and isotonic calibrators are fitted on the validation split on top
of the frozen model (``CalibratedClassifierCV(FrozenEstimator(model))``). Plain isotonic regression maps
scores to plateaus, and ties lower AUC; the isotonic calibrator used here (:class:`RankedIsotonic`,
method ``isotonic_ranked``) breaks its ties by the raw score, so it is strictly increasing and ranks
exactly like the model. Calibration must not cost ranking: a method whose calibrated validation AUC is
more than ``AUC_TOLERANCE`` (0.001) below the raw model's is rejected (a Platt fit with a negative slope
would be). Because a calibrator always looks good on the data it was fitted on, the remaining methods are
compared by 5-fold *out-of-fold* Brier scores on the validation split; a method is used only if it lowers
the validation Brier of the raw model, the lowest wins, and the chosen calibrator is refitted on the
whole validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold

CalibrationMethod = Literal["none", "sigmoid", "isotonic_ranked"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("none", "sigmoid", "isotonic_ranked")
AUC_TOLERANCE = 0.001  # the largest validation AUC loss a calibrator may cause
TIE_BREAK_WEIGHT = 1e-5  # share of RankedIsotonic's output given to the raw score (breaks the plateaus)


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """AUC, recall, precision, F1 (at ``threshold``), Brier and the positive rate of ``y``."""
    yv = np.asarray(y).astype(int)
    pv = np.asarray(p, dtype=float)
    pred = (pv >= threshold).astype(int)
    return {
        "auc": float(roc_auc_score(yv, pv)) if len(np.unique(yv)) == 2 else float("nan"),
        "recall": float(recall_score(yv, pred, zero_division=0)),
        "precision": float(precision_score(yv, pred, zero_division=0)),
        "f1": float(f1_score(yv, pred, zero_division=0)),
        "brier": float(brier_score_loss(yv, pv)),
        "positive_rate": float(yv.mean()),
        "n": float(len(yv)),
    }


def choose_threshold(y_val: Any, p_val: Any) -> float:
    """The F1-maximising threshold on validation (ties: the higher threshold)."""
    precision, recall, thresholds = precision_recall_curve(np.asarray(y_val).astype(int), np.asarray(p_val))
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(thresholds[best].max())


@dataclass(frozen=True)
class ReliabilityCurve:
    """Mean predicted probability vs observed positive rate per bin (quantile bins)."""

    mean_predicted: list[float]
    observed_rate: list[float]


def reliability_curve(y: Any, p: Any, n_bins: int = 10) -> ReliabilityCurve:
    observed, predicted = calibration_curve(
        np.asarray(y).astype(int), np.asarray(p), n_bins=n_bins, strategy="quantile"
    )
    return ReliabilityCurve([float(v) for v in predicted], [float(v) for v in observed])


def proba_and_response(model: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(predict_proba[:, 1], response)`` in as few passes as possible: a binary LightGBM model is
    predicted once (raw score = its ``decision_function``; probability = its sigmoid, which is what
    LightGBM computes), other models once for the probability and, if they have one, once for the
    decision function."""
    if isinstance(model, lgb.LGBMClassifier) and getattr(model, "n_classes_", 2) == 2:
        raw = np.asarray(model.predict(X, raw_score=True), dtype=float)
        return expit(raw), raw
    proba = np.asarray(model.predict_proba(X))[:, 1]
    return proba, (response(model, X) if hasattr(model, "decision_function") else proba)


def response(model: Any, X: pd.DataFrame) -> np.ndarray:
    """The score a calibrator is fitted on — what ``CalibratedClassifierCV`` uses: ``decision_function``
    when the model has one (logistic regression, HistGradientBoosting), else ``predict_proba[:, 1]``."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=float)
    return np.asarray(model.predict_proba(X))[:, 1]


class _Scores(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A "model" whose decision function is its single input column: calibrators compared on
    precomputed validation scores see exactly what they would see on the real model."""

    def fit(self, X: Any, y: Any) -> _Scores:
        self.classes_ = np.unique(np.asarray(y))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float)[:, 0]

    def predict(self, X: Any) -> np.ndarray:  # part of the classifier interface; never used for scores
        return np.asarray(self.classes_[(self.decision_function(X) > 0).astype(int)])


class RankedIsotonic(IsotonicRegression):
    """Isotonic regression with its plateaus broken by the raw score:
    ``(1 - w) * isotonic(s) + w * expit((s - median) / std)`` with ``w`` = ``TIE_BREAK_WEIGHT``.

    Non-decreasing plus strictly increasing is strictly increasing, so two different scores never get
    the same probability and the calibrated scores rank exactly like the raw ones (same AUC); the
    probabilities move by at most ``w`` from plain isotonic regression."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RankedIsotonic:
        super().fit(X, y, sample_weight)
        s = np.asarray(X, dtype=float).ravel()
        self.center_ = float(np.median(s))
        self.scale_ = float(np.std(s)) or 1.0
        return self

    def predict(self, T: Any) -> np.ndarray:
        s = np.asarray(T, dtype=float).ravel()
        iso = np.asarray(super().predict(s), dtype=float)
        return (1.0 - TIE_BREAK_WEIGHT) * iso + TIE_BREAK_WEIGHT * expit((s - self.center_) / self.scale_)


@dataclass
class Calibration:
    """The calibration decision: chosen method, OOF validation Brier per method, the calibrated validation
    AUC per method (fitted on all of val) against the raw model's (``auc["none"]``), the methods rejected
    for costing ranking, and the final model.

    :meth:`apply` maps the raw model's precomputed scores to the final model's probabilities (equal to
    ``model.predict_proba(X)[:, 1]``), so no split has to be predicted again after calibration."""

    method: CalibrationMethod
    brier: dict[str, float]
    model: Any
    auc: dict[str, float] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)

    def apply(self, proba: np.ndarray, response_scores: np.ndarray | None = None) -> np.ndarray:
        """Final probabilities from the raw model's ``predict_proba[:, 1]`` and :func:`response` scores."""
        if self.method == "none":
            return np.asarray(proba, dtype=float)
        scores = proba if response_scores is None else response_scores
        [calibrated] = self.model.calibrated_classifiers_
        p = np.asarray(calibrated.calibrators[0].predict(np.asarray(scores, dtype=float)), dtype=float)
        p[(p > 1.0) & (p <= 1.0 + 1e-5)] = 1.0  # as CalibratedClassifierCV.predict_proba does
        return p


def _fit_calibrator(method: CalibrationMethod, scores: np.ndarray, y: np.ndarray) -> Any:
    """A fitted calibrator of ``method`` on 1-D scores: an object whose ``predict(scores)`` gives
    probabilities (sklearn's own for sigmoid, :class:`RankedIsotonic` for isotonic)."""
    if method == "isotonic_ranked":
        return RankedIsotonic(out_of_bounds="clip").fit(scores, y)
    frozen = FrozenEstimator(_Scores().fit(scores[:, None], y))
    [fitted] = CalibratedClassifierCV(frozen, method=method).fit(scores[:, None], y).calibrated_classifiers_
    return fitted.calibrators[0]


def calibrate(
    model: Any,
    X_val: pd.DataFrame,
    y_val: pd.Series,
    seed: int = 42,
    *,
    proba_val: np.ndarray | None = None,
    response_val: np.ndarray | None = None,
) -> Calibration:
    """Pick none / sigmoid / isotonic_ranked: methods costing more than ``AUC_TOLERANCE`` validation AUC
    are rejected, the rest compared by out-of-fold validation Brier; returns the (possibly wrapped) model.

    The comparison runs on the validation scores (``proba_val`` / ``response_val``, computed when
    not given) instead of re-predicting the validation split in every fold; only a chosen calibrator
    is fitted on ``X_val`` through the model (one prediction)."""
    raw = np.asarray(model.predict_proba(X_val))[:, 1] if proba_val is None else np.asarray(proba_val)
    scores = response(model, X_val) if response_val is None else np.asarray(response_val, dtype=float)
    y = np.asarray(y_val).astype(int)
    brier: dict[str, float] = {"none": float(brier_score_loss(y, raw))}
    auc: dict[str, float] = {"none": float(roc_auc_score(y, raw))}
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    fitted: dict[str, Any] = {}
    for method in CALIBRATION_METHODS[1:]:
        oof = np.empty(len(y), dtype=float)
        for fit_rows, held_out in cv.split(scores, y):
            oof[held_out] = _fit_calibrator(method, scores[fit_rows], y[fit_rows]).predict(scores[held_out])
        brier[method] = float(brier_score_loss(y, oof))
        fitted[method] = _fit_calibrator(method, scores, y)
        auc[method] = float(roc_auc_score(y, fitted[method].predict(scores)))
    rejected: list[str] = [m for m in CALIBRATION_METHODS[1:] if auc["none"] - auc[m] > AUC_TOLERANCE]
    allowed = [m for m in CALIBRATION_METHODS if m not in rejected]
    best: CalibrationMethod = min(allowed, key=lambda m: (brier[m], m != "none"))
    if best == "none":
        return Calibration("none", brier, model, auc, rejected)
    sklearn_method = "isotonic" if best == "isotonic_ranked" else best
    final = CalibratedClassifierCV(FrozenEstimator(model), method=sklearn_method).fit(X_val, y_val)
    if best == "isotonic_ranked":  # the same calibrator, fitted on the same validation scores
        final.calibrated_classifiers_[0].calibrators[0] = fitted[best]
    return Calibration(best, brier, final, auc, rejected)


@dataclass(frozen=True)
class ShapSummary:
    """Mean |SHAP| per feature (descending) and the share of the top 5 in the total."""

    mean_abs: pd.Series
    top5_share: float


def shap_summary(lgbm_model: Any, X: pd.DataFrame, max_rows: int = 5000, seed: int = 42) -> ShapSummary:
    """SHAP values of a LightGBM model via ``predict(pred_contrib=True)`` (TreeSHAP inside LightGBM)."""
    sample = X.sample(n=min(max_rows, len(X)), random_state=seed) if len(X) > max_rows else X
    contrib = np.asarray(lgbm_model.predict(sample, pred_contrib=True))[:, :-1]  # last column = bias
    mean_abs = pd.Series(np.abs(contrib).mean(axis=0), index=list(sample.columns)).sort_values(
        ascending=False
    )
    total = float(mean_abs.sum())
    return ShapSummary(mean_abs, float(mean_abs.iloc[:5].sum() / total) if total > 0 else 0.0)


@dataclass
class FairnessReport:
    """Metrics per segment value (per segment column) and the max recall gap vs the allowed maximum."""

    by_segment: pd.DataFrame
    max_disparity: float
    worst_column: str | None
    threshold: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = bool(np.isnan(self.max_disparity) or self.max_disparity <= self.threshold)


def fairness_report(
    y: Any,
    p: Any,
    threshold: float,
    segments: pd.DataFrame,
    max_disparity: float,
    min_group_size: int = 30,
    min_positives: int = 1,
) -> FairnessReport:
    """Recall/precision/AUC per value of each segment column; disparity = max - min recall of groups
    with at least ``min_group_size`` rows and at least ``min_positives`` positives (recall over a handful
    of positives is noise), over all segment columns."""
    yv, pv = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    rows: list[dict[str, Any]] = []
    worst, worst_col = float("nan"), None
    for col in segments.columns:
        values = segments[col].astype("string").fillna("<NA>").to_numpy()
        recalls = []
        for value in pd.unique(values):
            mask = values == value
            m = binary_metrics(yv[mask], pv[mask], threshold)
            rows.append({"segment": col, "value": str(value), **m})
            if mask.sum() >= min_group_size and yv[mask].sum() >= max(min_positives, 1):
                recalls.append(m["recall"])
        if len(recalls) >= 2:
            gap = max(recalls) - min(recalls)
            if np.isnan(worst) or gap > worst:
                worst, worst_col = gap, col
    return FairnessReport(pd.DataFrame(rows), worst, worst_col, max_disparity)


@dataclass(frozen=True)
class GateResult:
    """One promotion gate: its name, measured value, limit and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool
