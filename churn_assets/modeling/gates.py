"""The seven promotion gates: what the challenger step measures for each (typed) and the rule over it.

:class:`ChallengerMeasurements` is what ``challenger_stage.evaluate_challenger`` measures on the test
split and stores in ``challenger.json`` (field names = the JSON keys); :func:`gate_results` applies the
limits of ``settings.modeling`` (``gate_*``) to it. The Dagster asset checks on ``training/challenger``
call :func:`gate_results` with the CURRENT limits, so tightening a limit re-decides without retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from churn_assets.modeling.evaluation import GateResult, ReliabilityCurve
from churn_assets.modeling.names import GATES as GATES  # re-exported
from churn_assets.settings import ModelingSettings

THRESHOLD_RULE = "max F1 on the calibrated validation scores (ties: higher threshold)"
SHAP_METHOD = "LightGBM predict(pred_contrib=True)"


@dataclass
class AucFloor:
    test_auc: float | None


@dataclass
class TrainTestGap:
    """Train AUC (on the train rows the best model scored) minus test AUC."""

    train_auc: float | None
    test_auc: float | None
    gap: float | None


@dataclass
class CalibrationMeasure:
    """The calibration choice (``method``, OOF validation Brier per method, calibrated validation AUC per
    method and the methods rejected for losing AUC) and its result on test."""

    method: str
    val_brier_oof: dict[str, float]
    test_brier: float
    no_skill_brier: float  # base rate x (1 - base rate)
    calibration_error: float | None  # mean |observed - predicted| over the reliability bins
    reliability: ReliabilityCurve
    val_auc: dict[str, float] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)


@dataclass
class Rates:
    recall: float
    precision: float
    f1: float


@dataclass
class ThresholdMeasure:
    rule: str
    value: float
    val: Rates
    test: Rates
    test_positive_rate: float


@dataclass
class ShapMeasure:
    """``method`` says why ``top5_share`` is None when the gate does not apply."""

    method: str
    top5_share: float | None = None
    top5: list[str] = field(default_factory=list)
    mean_abs: dict[str, float] = field(default_factory=dict)  # the 15 largest mean |SHAP|


@dataclass
class FairnessMeasure:
    """Recall gap between segment groups; ``by_segment`` rows: segment, value, n, positive_rate,
    recall, precision, auc. No segment column present: ``columns`` empty, ``max_disparity`` None."""

    columns: list[str]
    max_disparity: float | None = None
    worst_column: str | None = None
    by_segment: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StressSlice:
    rows: int
    positives: int
    auc: float | None  # None: a single class in the slice
    recall: float
    precision: float
    f1: float
    brier: float
    positive_rate: float


@dataclass
class ChallengerMeasurements:
    """Every gate's measurement, one field per gate (in :data:`GATES` order)."""

    auc_floor: AucFloor
    train_test_gap: TrainTestGap
    calibration: CalibrationMeasure
    threshold: ThresholdMeasure
    shap: ShapMeasure
    fairness: FairnessMeasure
    stress_slices: dict[str, StressSlice]


def as_float(value: float | None) -> float:
    """A measurement as a float (None, i.e. undefined, as NaN)."""
    return float("nan") if value is None else float(value)


def gate_results(m: ChallengerMeasurements, cfg: ModelingSettings) -> list[GateResult]:
    """The seven gates over ``m`` (limits from ``cfg``), in :data:`GATES` order.

    * ``auc_floor``: test AUC >= ``gate_min_auc``.
    * ``train_test_gap``: train AUC - test AUC <= ``gate_max_auc_gap``.
    * ``calibration``: test Brier below the no-skill Brier (base rate) AND the mean reliability error
      (|observed - predicted| averaged over 10 quantile bins) <= ``gate_max_calibration_error``.
    * ``threshold``: at the validation-chosen threshold, test recall >= ``gate_min_recall`` AND test
      precision above the test positive rate (better than contacting customers at random).
    * ``shap``: top-5 share of mean |SHAP| <= ``gate_max_shap_top5_share`` (one or two features carrying
      everything smells of leakage); passes as not applicable for a non-LightGBM challenger.
    * ``fairness``: max recall gap between segment groups <= ``gate_max_disparity``.
    * ``stress_slices``: AUC on every slice (new customers, high value) >= ``gate_min_slice_auc``;
      slices with a single class are skipped.
    """
    auc = as_float(m.auc_floor.test_auc)
    gap = as_float(m.train_test_gap.gap)
    cal_err = as_float(m.calibration.calibration_error)
    recall, precision = m.threshold.test.recall, m.threshold.test.precision
    shap_share = as_float(m.shap.top5_share)
    disparity = as_float(m.fairness.max_disparity)
    slice_aucs = [a for a in (as_float(s.auc) for s in m.stress_slices.values()) if not math.isnan(a)]
    worst_slice = min(slice_aucs) if slice_aucs else float("nan")
    return [
        GateResult("auc_floor", auc, cfg.gate_min_auc, auc >= cfg.gate_min_auc),
        GateResult("train_test_gap", gap, cfg.gate_max_auc_gap, gap <= cfg.gate_max_auc_gap),
        GateResult(
            "calibration",
            cal_err,
            cfg.gate_max_calibration_error,
            cal_err <= cfg.gate_max_calibration_error
            and m.calibration.test_brier < m.calibration.no_skill_brier,
        ),
        GateResult(
            "threshold",
            recall,
            cfg.gate_min_recall,
            recall >= cfg.gate_min_recall and precision > m.threshold.test_positive_rate,
        ),
        GateResult(
            "shap",
            shap_share,
            cfg.gate_max_shap_top5_share,
            math.isnan(shap_share) or shap_share <= cfg.gate_max_shap_top5_share,
        ),
        GateResult(
            "fairness",
            disparity,
            cfg.gate_max_disparity,
            math.isnan(disparity) or disparity <= cfg.gate_max_disparity,
        ),
        GateResult(
            "stress_slices",
            worst_slice,
            cfg.gate_min_slice_auc,
            math.isnan(worst_slice) or worst_slice >= cfg.gate_min_slice_auc,
        ),
    ]
