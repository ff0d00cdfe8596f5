"""One training run end to end: tune, fit baselines, pick, calibrate, evaluate, track, register, promote.

:func:`train_and_register` only needs a :class:`~churn_assets.modeling.splits.Splits` (feature matrix,
labels, split assignment — from the simulated world, the feature store or a CSV) and the settings.

Model selection is on VALIDATION AUC (the test split is only reported, never used to choose). The
chosen model is calibrated on validation (see ``evaluation.calibrate``), its threshold chosen on the
calibrated validation scores (max F1), and then evaluated once on test: metrics, reliability, SHAP
(LightGBM only), fairness by segment, stress slices and promotion gates. Every candidate and the final
model are MLflow runs; the final model is registered and considered for promotion against the
champion on the same test holdout.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from churn_assets.modeling import plots
from churn_assets.modeling.candidates import (
    BASELINES,
    FittedCandidate,
    baseline_specs,
    fit_candidate,
    lightgbm_spec,
)
from churn_assets.modeling.evaluation import (
    binary_metrics,
    calibrate,
    check_gates,
    choose_threshold,
    fairness_report,
    shap_summary,
    stress_slices,
)
from churn_assets.modeling.paths import optuna_storage_url
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.splits import Splits, build_splits
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.tuning import TuningResult, lgbm_params, tune_lightgbm
from churn_assets.settings import ModelingSettings, Settings

Progress = Callable[[str, int, int], None]


def no_progress(_task: str, _done: int, _total: int) -> None:
    """The default progress callback: report nothing."""
    return None


@dataclass
class TrainingReport:
    """Everything a training run decided and measured (JSON-friendly via :meth:`summary`)."""

    best_model: str
    test_auc: float
    val_auc: dict[str, float]
    candidate_test_auc: dict[str, float]
    imbalance: dict[str, str]
    threshold: float
    calibration: str
    calibration_brier: dict[str, float]
    test_metrics: dict[str, float]
    train_auc: float
    shap_top5_share: float | None
    shap_top5: list[str]
    fairness_max_disparity: float | None
    fairness_column: str | None
    stress: dict[str, dict[str, Any]]
    gates: dict[str, bool]
    model_version: str
    semver: str
    promotion: str
    promotion_reason: str
    run_ids: dict[str, str] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        baselines = {k: v for k, v in self.candidate_test_auc.items() if k != "lightgbm"}
        return {
            "test_auc": self.test_auc,
            "best_model": self.best_model,
            "baselines": baselines,
            "candidates_test_auc": self.candidate_test_auc,
            "candidates_val_auc": self.val_auc,
            "model_version": self.model_version,
            "semver": self.semver,
            "promotion": self.promotion,
            "promotion_reason": self.promotion_reason,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "calibration_brier_val_oof": self.calibration_brier,
            "test_metrics": self.test_metrics,
            "train_auc": self.train_auc,
            "imbalance": self.imbalance,
            "shap_top5_share": self.shap_top5_share,
            "shap_top5": self.shap_top5,
            "fairness_max_disparity": self.fairness_max_disparity,
            "fairness_column": self.fairness_column,
            "stress": self.stress,
            "gates": self.gates,
            "tuning": self.tuning,
            "run_ids": self.run_ids,
        }


def fit_tuned_lightgbm(tuned: TuningResult, splits: Splits, cfg: ModelingSettings) -> FittedCandidate:
    """Refit LightGBM with the study's best parameters, recording its class-imbalance choice."""
    lgbm = fit_candidate(
        lightgbm_spec(lgbm_params(tuned.best_params, splits), cfg.seed, cfg.n_jobs),
        splits,
        "none",
        cfg.n_jobs,
    )
    lgbm.params["imbalance"] = tuned.imbalance
    lgbm.imbalance = "balanced" if tuned.imbalance == "balanced" else "none"
    lgbm.val_auc_by_imbalance = tuned.imbalance_auc
    return lgbm


def _candidate_metrics(c: FittedCandidate, splits: Splits) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics of a candidate at its own val-F1 threshold, plus its test scores."""
    p_val, p_test = c.predict_proba(splits.X_val), c.predict_proba(splits.X_test)
    threshold = choose_threshold(splits.y_val, p_val)
    metrics = binary_metrics(splits.y_test, p_test, threshold)
    metrics = {k: v for k, v in metrics.items() if k not in ("positive_rate", "n")}
    metrics.update(val_auc=c.val_auc, threshold=threshold, train_seconds=c.train_seconds)
    return metrics, p_test


def train_and_register(
    splits: Splits,
    settings: Settings,
    data_hash: str,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    baselines: Sequence[str] = BASELINES,
    study_name: str | None = None,
    progress: Progress = no_progress,
    actor: str = "system",
) -> TrainingReport:
    """Run the whole training pipeline on ``splits`` and register the chosen model (see module doc)."""
    with tempfile.TemporaryDirectory(prefix="churnops-plots-") as tmp:
        return _train(
            splits,
            settings,
            data_hash,
            n_trials,
            timeout_seconds,
            baselines,
            study_name,
            progress,
            actor,
            Path(tmp),
        )


def _train(
    splits: Splits,
    settings: Settings,
    data_hash: str,
    n_trials: int | None,
    timeout_seconds: float | None,
    baselines: Sequence[str],
    study_name: str | None,
    progress: Progress,
    actor: str,
    workdir: Path,
) -> TrainingReport:
    cfg = settings.modeling
    n_trials = n_trials or cfg.n_trials
    tracking = configure(settings)

    # 1. Tune LightGBM (trial count reported as progress).
    def on_trial(study: Any, _trial: Any) -> None:
        progress("tuning LightGBM (Optuna)", min(len(study.trials), n_trials), n_trials)

    progress("tuning LightGBM (Optuna)", 0, n_trials)
    tuned = tune_lightgbm(
        splits,
        optuna_storage_url(settings),
        study_name or cfg.study_name,
        n_trials,
        timeout_seconds if timeout_seconds is not None else cfg.timeout_seconds,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
        callbacks=[on_trial],
    )
    progress("tuning LightGBM (Optuna)", n_trials, n_trials)

    # 2. Fit the tuned LightGBM and the baselines.
    total = 1 + len(baselines)
    progress("fitting candidates", 0, total)
    fitted = [fit_tuned_lightgbm(tuned, splits, cfg)]
    progress("fitting candidates", 1, total)
    for i, spec in enumerate(baseline_specs(cfg.seed, tuple(baselines), cfg.n_jobs), start=2):
        fitted.append(fit_candidate(spec, splits, "compare", cfg.n_jobs))
        progress("fitting candidates", i, total)

    # 3. Log every candidate as an MLflow run.
    run_ids: dict[str, str] = {}
    test_auc: dict[str, float] = {}
    progress("logging runs (MLflow)", 0, len(fitted))
    for i, c in enumerate(fitted, start=1):
        metrics, p_test = _candidate_metrics(c, splits)
        test_auc[c.name] = metrics["auc"]
        metrics.update({f"val_auc_{k}": v for k, v in c.val_auc_by_imbalance.items()})
        artifacts = [
            plots.roc_plot(splits.y_test, p_test, workdir / c.name / "roc.png", c.name),
            plots.calibration_plot(splits.y_test, p_test, workdir / c.name / "calibration.png", c.name),
        ]
        if isinstance(c.model, lgb.LGBMClassifier):
            gain = pd.Series(c.model.booster_.feature_importance("gain"), index=splits.features)
            artifacts.append(
                plots.importance_plot(gain, workdir / c.name / "importance.png", "LightGBM gain")
            )
        logged = log_candidate_run(
            tracking, c.name, c.model, c.flavor, c.params, metrics, artifacts, tags={"role": "candidate"}
        )
        run_ids[c.name] = logged.run_id
        progress("logging runs (MLflow)", i, len(fitted))

    # 4. Choose on validation, calibrate, threshold, evaluate on test.
    progress("calibrating + evaluating", 0, 1)
    best = max(fitted, key=lambda c: c.val_auc)
    cal = calibrate(best.model, splits.X_val, splits.y_val, cfg.seed)
    final = cal.model
    p_val = np.asarray(final.predict_proba(splits.X_val))[:, 1]
    p_test = np.asarray(final.predict_proba(splits.X_test))[:, 1]
    threshold = choose_threshold(splits.y_val, p_val)
    test_metrics = binary_metrics(splits.y_test, p_test, threshold)
    train_auc = binary_metrics(splits.y_train, np.asarray(final.predict_proba(splits.X_train))[:, 1])["auc"]

    context = (
        splits.X_test
        if splits.test_context is None
        else pd.concat(
            [splits.X_test, splits.test_context.drop(columns=splits.X_test.columns, errors="ignore")], axis=1
        )
    )
    segment_cols = [c for c in cfg.segment_columns if c in context.columns]
    fairness = (
        fairness_report(splits.y_test, p_test, threshold, context[segment_cols], cfg.gate_max_disparity)
        if segment_cols
        else None
    )
    stress = stress_slices(splits.y_test, p_test, threshold, context, cfg.tenure_columns, cfg.revenue_columns)
    gates = check_gates(test_metrics["auc"], train_auc, fairness, cfg.gate_min_auc, cfg.gate_max_auc_gap)

    artifacts = [
        plots.roc_plot(splits.y_test, p_test, workdir / "final" / "roc.png", best.name),
        plots.calibration_plot(splits.y_test, p_test, workdir / "final" / "calibration.png", best.name),
    ]
    if fairness is not None:
        fairness.by_segment.to_csv(workdir / "final" / "fairness_by_segment.csv", index=False)
        artifacts.append(workdir / "final" / "fairness_by_segment.csv")
    shap = None
    raw = best.model
    if isinstance(raw, lgb.LGBMClassifier):
        shap = shap_summary(raw, splits.X_test, seed=cfg.seed)
        artifacts.append(plots.shap_bar_plot(shap.mean_abs, workdir / "final" / "shap_summary.png"))
        gain = pd.Series(raw.booster_.feature_importance("gain"), index=splits.features)
        artifacts.append(plots.importance_plot(gain, workdir / "final" / "importance.png", "LightGBM gain"))
    progress("calibrating + evaluating", 1, 1)

    # 5. Log the final model, register it, consider promotion on the same holdout.
    progress("registering (MLflow registry)", 0, 1)
    final_metrics = {
        **{k: v for k, v in test_metrics.items() if k not in ("n",)},
        "train_auc": train_auc,
        "val_auc": best.val_auc,
        "threshold": threshold,
        "train_seconds": best.train_seconds,
        **({"shap_top5_share": shap.top5_share} if shap else {}),
        **({"fairness_max_disparity": fairness.max_disparity} if fairness else {}),
    }
    run_name = f"final:{best.name}+{cal.method}"
    logged = log_candidate_run(
        tracking,
        run_name,
        final,
        "lightgbm" if cal.method == "none" and best.flavor == "lightgbm" else "sklearn",
        {**best.params, "calibration": cal.method, "threshold_rule": "max_f1_on_val"},
        final_metrics,
        artifacts,
        tags={"role": "final", "data_sha256": data_hash},
    )
    run_ids[run_name] = logged.run_id
    registry = ModelRegistry(settings)
    registered = registry.register(logged, splits.features, data_hash, final_metrics, gates, actor=actor)
    champion_auc = registry.holdout_auc("champion", splits.X_test, splits.y_test)
    decision = registry.consider(registered.version, test_metrics["auc"], champion_auc, gates, actor=actor)
    progress("registering (MLflow registry)", 1, 1)

    return TrainingReport(
        best_model=best.name,
        test_auc=test_metrics["auc"],
        val_auc={c.name: c.val_auc for c in fitted},
        candidate_test_auc=test_auc,
        imbalance={c.name: c.imbalance for c in fitted},
        threshold=threshold,
        calibration=cal.method,
        calibration_brier=cal.brier,
        test_metrics=test_metrics,
        train_auc=train_auc,
        shap_top5_share=shap.top5_share if shap else None,
        shap_top5=list(shap.mean_abs.index[:5]) if shap else [],
        fairness_max_disparity=fairness.max_disparity if fairness else None,
        fairness_column=fairness.worst_column if fairness else None,
        stress=stress,
        gates={g.name: g.passed for g in gates},
        model_version=registered.version,
        semver=registered.semver,
        promotion=decision.outcome,
        promotion_reason=decision.reason,
        run_ids=run_ids,
        tuning={
            "study": tuned.study_name,
            "best_val_auc": tuned.best_val_auc,
            "complete": tuned.n_complete,
            "pruned": tuned.n_pruned,
            "run_now": tuned.n_run_now,
            "imbalance_auc": tuned.imbalance_auc,
            "best_params": tuned.best_params,
            "seconds_budget": timeout_seconds if timeout_seconds is not None else cfg.timeout_seconds,
        },
    )


def train_from_frame(
    X: pd.DataFrame,
    y: pd.Series,
    assignment: pd.Series,
    settings: Settings,
    data_hash: str,
    features: Sequence[str] | None = None,
    context: pd.DataFrame | None = None,
    **kwargs: Any,
) -> TrainingReport:
    """Validate ``X``/``y``/``assignment`` (:func:`build_splits`) and run :func:`train_and_register`.

    Bad inputs raise ``TrainingDataError`` BEFORE anything is tuned, tracked or registered.
    """
    splits = build_splits(X, y, assignment, features=features, context=context)
    return train_and_register(splits, settings, data_hash, **kwargs)
