"""The challenger step of training, and the promotion decision after the gates.

:func:`evaluate_challenger` — calibrate the best candidate (``candidate_stage.CandidateStage``), choose
its threshold, measure it on test for every gate (``gates.ChallengerMeasurements``: calibration,
threshold, SHAP, fairness, stress slices), log the final MLflow run and register the version (alias
``challenger``) → :class:`ChallengerStage`. :func:`decide_promotion` — the promotion rule against the
champion on the same holdout, with the gates re-evaluated under the current limits. Both work on the
production model unless given another registered model's name (``model_name``: a bring-your-own table).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from churn_assets.modeling import plots
from churn_assets.modeling.candidate_stage import CandidateStage
from churn_assets.modeling.ensemble import BlendEnsemble
from churn_assets.modeling.evaluation import (
    Calibration,
    FairnessReport,
    ShapSummary,
    binary_metrics,
    calibrate,
    choose_threshold,
    fairness_report,
    reliability_curve,
    shap_summary,
)
from churn_assets.modeling.gates import (
    SHAP_METHOD,
    THRESHOLD_RULE,
    AucFloor,
    CalibrationMeasure,
    ChallengerMeasurements,
    FairnessMeasure,
    Rates,
    ShapMeasure,
    StressSlice,
    ThresholdMeasure,
    TrainTestGap,
    as_float,
    gate_results,
)
from churn_assets.modeling.registry import (
    LIGHTGBM_PARAMS_TAG,
    HoldoutMismatch,
    ModelRegistry,
    PromotionDecision,
    check_registrable,
    holdout_sha256,
)
from churn_assets.modeling.score_reference import REFERENCE_TAG, ScoreReference
from churn_assets.modeling.splits import Splits
from churn_assets.modeling.stage_json import JsonStage, clean_json
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.settings import ModelingSettings, Settings


@dataclass
class ChallengerStage(JsonStage):
    """The registered challenger: version, and every measurement the gates look at."""

    model_name: str
    version: str
    semver: str
    run_id: str
    best: str
    calibration: str
    data_sha256: str
    features: list[str]
    test_metrics: dict[str, float]
    train_auc: float
    measurements: ChallengerMeasurements
    plots: dict[str, str]


def slice_masks(context: pd.DataFrame, cfg: ModelingSettings) -> dict[str, np.ndarray]:
    """Stress slices of the test rows, when such columns exist:

    * ``new_customers``: ``slice_tenure_column`` (``tenure_days``) below ``new_customer_days``; for a
      table without it (bring-your-own), the first of ``tenure_columns`` at or below its 10th
      percentile (unit-free);
    * ``high_value``: ``slice_revenue_column`` (``monthly_revenue``) or else the first of
      ``revenue_columns``, in its top decile.
    """
    masks: dict[str, np.ndarray] = {}
    if cfg.slice_tenure_column in context.columns:
        tenure = pd.to_numeric(context[cfg.slice_tenure_column], errors="coerce").to_numpy(dtype=float)
        masks["new_customers"] = tenure < cfg.new_customer_days
    else:
        col = next((c for c in cfg.tenure_columns if c in context.columns), None)
        if col is not None:
            tenure = pd.to_numeric(context[col], errors="coerce").to_numpy(dtype=float)
            if not np.isnan(tenure).all():
                masks["new_customers"] = tenure <= float(np.nanquantile(tenure, 0.1))
    col = next((c for c in (cfg.slice_revenue_column, *cfg.revenue_columns) if c in context.columns), None)
    if col is not None:
        revenue = pd.to_numeric(context[col], errors="coerce").to_numpy(dtype=float)
        if not np.isnan(revenue).all():
            masks["high_value"] = revenue >= float(np.nanquantile(revenue, 0.9))
    return masks


def test_context(splits: Splits) -> pd.DataFrame:
    """The test features plus the test context columns (segments, slice columns) not among them."""
    if splits.test_context is None:
        return splits.X_test
    extra = splits.test_context.drop(columns=splits.X_test.columns, errors="ignore")
    return pd.concat([splits.X_test, extra], axis=1)


@dataclass
class _Scores:
    """The calibrated scores of the best candidate (``train_index``: the train rows it scored, None = all)."""

    calibration: Calibration
    val: np.ndarray
    test: np.ndarray
    train: np.ndarray
    train_index: np.ndarray | None


def _calibrated_scores(
    candidates: CandidateStage, raw: Any, splits: Splits, cfg: ModelingSettings
) -> _Scores:
    scores = candidates.load_scores()
    with threadpool_limits(limits=cfg.n_jobs):
        cal = calibrate(
            raw,
            splits.X_val,
            splits.y_val,
            cfg.seed,
            proba_val=scores["proba_val"],
            response_val=scores["response_val"],
        )
    val, test, train = (
        cal.apply(scores[f"proba_{n}"], scores[f"response_{n}"]) for n in ("val", "test", "train")
    )
    return _Scores(cal, val, test, train, scores.get("train_index"))


def measure_calibration(
    cal: Calibration, y_test: pd.Series, p_test: np.ndarray, test_brier: float
) -> CalibrationMeasure:
    rate = float(np.mean(y_test))
    curve = reliability_curve(y_test, p_test)
    return CalibrationMeasure(
        method=cal.method,
        val_brier_oof=dict(cal.brier),
        test_brier=test_brier,
        no_skill_brier=rate * (1 - rate),
        calibration_error=float(np.mean(np.abs(np.subtract(curve.observed_rate, curve.mean_predicted)))),
        reliability=curve,
        val_auc=dict(cal.auc),
        rejected=list(cal.rejected),
    )


def _rates(metrics: dict[str, float]) -> Rates:
    return Rates(recall=metrics["recall"], precision=metrics["precision"], f1=metrics["f1"])


def measure_fairness(
    y_test: pd.Series, p_test: np.ndarray, threshold: float, context: pd.DataFrame, cfg: ModelingSettings
) -> tuple[FairnessMeasure, FairnessReport | None]:
    """Recall gap between the groups of ``cfg.segment_columns`` present in ``context``."""
    columns = [c for c in cfg.segment_columns if c in context.columns]
    if not columns:
        return FairnessMeasure(columns=[]), None
    report = fairness_report(
        y_test,
        p_test,
        threshold,
        context[columns],
        cfg.gate_max_disparity,
        min_positives=cfg.fairness_min_positives,
    )
    table = report.by_segment[["segment", "value", "n", "positive_rate", "recall", "precision", "auc"]]
    measure = FairnessMeasure(
        columns=columns,
        max_disparity=report.max_disparity,
        worst_column=report.worst_column,
        by_segment=[{str(k): v for k, v in row.items()} for row in table.round(4).to_dict("records")],
    )
    return measure, report


def measure_stress_slices(
    y_test: pd.Series, p_test: np.ndarray, threshold: float, context: pd.DataFrame, cfg: ModelingSettings
) -> dict[str, StressSlice]:
    """Metrics at ``threshold`` on every slice of :func:`slice_masks`."""
    y = np.asarray(y_test).astype(int)
    out = {}
    for name, mask in slice_masks(context, cfg).items():
        m = binary_metrics(y[mask], p_test[mask], threshold)
        out[name] = StressSlice(
            rows=int(mask.sum()),
            positives=int(y[mask].sum()),
            auc=m["auc"],
            recall=m["recall"],
            precision=m["precision"],
            f1=m["f1"],
            brier=m["brier"],
            positive_rate=m["positive_rate"],
        )
    return out


def measure_shap(
    raw: Any, best: str, X_test: pd.DataFrame, features: Sequence[str], cfg: ModelingSettings
) -> tuple[ShapMeasure, ShapSummary | None]:
    """Top-5 share of mean |SHAP| on a test sample (LightGBM, or an ensemble's LightGBM member; not
    applicable with <= 5 features)."""
    if isinstance(raw, BlendEnsemble) and "lightgbm" in raw.names:
        raw = raw.members[raw.names.index("lightgbm")]
    if not isinstance(raw, lgb.LGBMClassifier):
        return ShapMeasure(method=f"not applicable: {best} is not LightGBM and has no LightGBM member"), None
    shap = shap_summary(raw, X_test, max_rows=cfg.shap_max_rows, seed=cfg.seed)
    if X_test.shape[1] <= 5:
        return ShapMeasure(
            method=f"not applicable: {X_test.shape[1]} features (the top 5 hold everything)"
        ), shap
    measure = ShapMeasure(
        method=SHAP_METHOD,
        top5_share=shap.top5_share,
        top5=list(shap.mean_abs.index[:5]),
        mean_abs={str(k): float(v) for k, v in shap.mean_abs.iloc[:15].items()},
    )
    return measure, shap


def _final_metrics(
    candidates: CandidateStage,
    test: dict[str, float],
    m: ChallengerMeasurements,
    shap: ShapSummary | None,
    fairness: FairnessReport | None,
) -> dict[str, float]:
    """The metrics of the final MLflow run (and of the registry version's ``metric.*`` tags)."""
    return {
        **{k: v for k, v in test.items() if k != "n"},
        "train_auc": as_float(m.train_test_gap.train_auc),
        "val_auc": candidates.val_auc,
        "threshold": m.threshold.value,
        "train_seconds": candidates.train_seconds,
        "calibration_error": float(
            np.nan if m.calibration.calibration_error is None else m.calibration.calibration_error
        ),
        **({"shap_top5_share": shap.top5_share} if shap else {}),
        **({"fairness_max_disparity": fairness.max_disparity} if fairness else {}),
        **{f"stress_{n}_auc": as_float(s.auc) for n, s in m.stress_slices.items()},
    }


def evaluate_challenger(
    candidates: CandidateStage,
    splits: Splits,
    settings: Settings,
    data_hash: str,
    workdir: Path,
    actor: str = "dagster",
    model_name: str | None = None,
) -> ChallengerStage:
    """Calibrate + threshold the best candidate, evaluate it on test, log the final MLflow run and
    register it as a new version of the registered model (alias ``challenger``).

    Works on the best model's saved scores (:meth:`CandidateStage.load_scores`): calibration maps them
    to the final probabilities, so nothing is predicted again except one validation pass to fit a
    chosen calibrator through the model, and SHAP on a test sample. ``splits.X_train`` is not used
    (it may be a labels-only part). ``model_name``: the registered model (None = the production one);
    the version is tagged ``eval_sha256``, the fingerprint of the test holdout its metrics come from."""
    cfg = settings.modeling
    registry = ModelRegistry(settings, name=model_name)
    check_registrable(settings, registry.name, splits.features)
    workdir.mkdir(parents=True, exist_ok=True)
    raw = candidates.load_model()
    s = _calibrated_scores(candidates, raw, splits, cfg)
    threshold = choose_threshold(splits.y_val, s.val)
    test = binary_metrics(splits.y_test, s.test, threshold)
    val = binary_metrics(splits.y_val, s.val, threshold)
    y_train = splits.y_train if s.train_index is None else splits.y_train.iloc[s.train_index]
    train_auc = binary_metrics(y_train, s.train)["auc"]  # on the train rows the best model scored
    context = test_context(splits)
    fairness, fairness_full = measure_fairness(splits.y_test, s.test, threshold, context, cfg)
    shap, shap_full = measure_shap(raw, candidates.best, splits.X_test, splits.features, cfg)
    measurements = ChallengerMeasurements(
        auc_floor=AucFloor(test_auc=test["auc"]),
        train_test_gap=TrainTestGap(train_auc=train_auc, test_auc=test["auc"], gap=train_auc - test["auc"]),
        calibration=measure_calibration(s.calibration, splits.y_test, s.test, test["brier"]),
        threshold=ThresholdMeasure(
            rule=THRESHOLD_RULE,
            value=threshold,
            val=_rates(val),
            test=_rates(test),
            test_positive_rate=float(np.mean(splits.y_test)),
        ),
        shap=shap,
        fairness=fairness,
        stress_slices=measure_stress_slices(splits.y_test, s.test, threshold, context, cfg),
    )

    artifacts = {
        "roc": plots.roc_plot(splits.y_test, s.test, workdir / "roc.png", candidates.best),
        "reliability": plots.calibration_plot(
            splits.y_test, s.test, workdir / "calibration.png", candidates.best
        ),
    }
    if shap_full is not None:
        artifacts["shap"] = plots.shap_bar_plot(shap_full.mean_abs, workdir / "shap_summary.png")
    files: list[Path] = list(artifacts.values())
    if fairness_full is not None:
        fairness_full.by_segment.to_csv(workdir / "fairness_by_segment.csv", index=False)
        files.append(workdir / "fairness_by_segment.csv")

    final_metrics = _final_metrics(candidates, test, measurements, shap_full, fairness_full)
    cal = s.calibration
    logged = log_candidate_run(
        configure(settings),
        f"final:{candidates.best}+{cal.method}",
        cal.model,
        "lightgbm" if cal.method == "none" and candidates.flavor == "lightgbm" else "sklearn",
        {
            **candidates.params,
            "calibration": cal.method,
            "calibration_rejected": ",".join(cal.rejected) or "none",
            "threshold_rule": "max_f1_on_val",
        },
        final_metrics,
        files,
        tags={"role": "final", "data_sha256": data_hash},
        input_example=splits.X_test,
    )
    extra = {
        "eval_sha256": holdout_sha256(splits.X_test, splits.y_test),
        "calibration": cal.method,
        "calibration_val_auc": json.dumps(clean_json(cal.auc)),
        REFERENCE_TAG: ScoreReference.from_scores(np.concatenate([s.val, s.test]), threshold).to_tag(),
    }
    if candidates.members:
        extra["ensemble_members"] = json.dumps(candidates.members)
    if candidates.best == "lightgbm" or "lightgbm" in candidates.members:
        extra[LIGHTGBM_PARAMS_TAG] = json.dumps(clean_json(candidates.lightgbm_params))
    registered = registry.register(
        logged,
        splits.features,
        data_hash,
        final_metrics,
        gate_results(measurements, cfg),
        actor=actor,
        extra_tags=extra,
    )
    return ChallengerStage(
        model_name=registered.name,
        version=registered.version,
        semver=registered.semver,
        run_id=logged.run_id,
        best=candidates.best,
        calibration=cal.method,
        data_sha256=data_hash,
        features=list(splits.features),
        test_metrics=dict(test),
        train_auc=train_auc,
        measurements=measurements,
        plots={k: str(v) for k, v in artifacts.items()},
    )


def decide_promotion(
    settings: Settings,
    challenger: ChallengerStage,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    actor: str = "dagster",
) -> PromotionDecision:
    """Score the champion of the challenger's registered model on the same test holdout and apply the
    promotion rule (audit-logged).

    Gates are re-evaluated with the current limits; with no champion yet, a challenger that passes
    every gate is promoted (``manual`` mode: marked pending instead). A champion that cannot score the
    holdout (other features: evaluated on other data) is not compared and stays.
    """
    registry = ModelRegistry(settings, name=challenger.model_name)
    gates = gate_results(challenger.measurements, settings.modeling)
    not_compared = None
    try:
        champion_auc = registry.holdout_auc("champion", X_test, y_test)
    except HoldoutMismatch as exc:
        champion_auc, not_compared = None, str(exc)
    return registry.consider(
        challenger.version,
        float(challenger.test_metrics["auc"]),
        champion_auc,
        gates,
        actor=actor,
        not_compared=not_compared,
        eval_sha256=holdout_sha256(X_test, y_test),
    )
