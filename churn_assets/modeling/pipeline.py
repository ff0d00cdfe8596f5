"""One training run end to end: tune, fit baselines, pick, calibrate, evaluate, track, register, promote.

:func:`train_and_register` only needs a :class:`~churn_assets.modeling.splits.Splits` (feature matrix,
labels, split assignment — from the simulated world, the feature store or a CSV) and the settings.

Model selection is on VALIDATION AUC (the test split is only reported, never used to choose). The
chosen model is calibrated on validation (see ``evaluation.calibrate``), its threshold chosen on the
calibrated validation scores (max F1), and then evaluated once on test: metrics, reliability, SHAP
(LightGBM only), fairness by segment, stress slices and promotion gates. Every candidate and the final
model are MLflow runs; the final model is registered and considered for promotion against the
champion on the same test holdout.

It is the Dagster training graph's code path (``stages.py``) run in one call — same candidates, same
seven gates, same registration — for ``churnops train-table`` and library users.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from churn_assets.modeling.candidates import BASELINES
from churn_assets.modeling.registry import PromotionDecision
from churn_assets.modeling.splits import Splits, build_splits
from churn_assets.modeling.stages import (
    CandidateStage,
    ChallengerStage,
    decide_promotion,
    evaluate_challenger,
    gate_results,
    run_candidates,
)
from churn_assets.settings import Settings

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
    """Run the whole training pipeline on ``splits`` and register the chosen model (see module doc).

    The same code path as the Dagster training graph: :func:`~churn_assets.modeling.stages.run_candidates`
    → :func:`~churn_assets.modeling.stages.evaluate_challenger` (seven gate measurements, final run,
    registration) → :func:`~churn_assets.modeling.stages.decide_promotion`, with the stage files in a
    temporary folder. ``n_trials`` / ``timeout_seconds`` override the settings' study budget.
    """
    cfg = settings.modeling
    budget = {
        "n_trials": n_trials or cfg.n_trials,
        "timeout_seconds": cfg.timeout_seconds if timeout_seconds is None else timeout_seconds,
    }
    run_settings = settings.model_copy(update={"modeling": cfg.model_copy(update=budget)})
    steps = ("tuning + candidates (Optuna, MLflow)", "challenger: calibrate, evaluate, register", "promotion")
    with tempfile.TemporaryDirectory(prefix="churnops-train-") as tmp:
        progress(steps[0], 0, 1)
        stage = run_candidates(
            splits,
            run_settings,
            Path(tmp) / "candidates",
            study_name=study_name or cfg.study_name,
            baselines=baselines,
        )
        progress(steps[0], 1, 1)
        progress(steps[1], 0, 1)
        challenger = evaluate_challenger(
            stage, splits, run_settings, data_hash, Path(tmp) / "challenger", actor
        )
        progress(steps[1], 1, 1)
        progress(steps[2], 0, 1)
        decision = decide_promotion(run_settings, challenger, splits.X_test, splits.y_test, actor)
        progress(steps[2], 1, 1)
    return report(stage, challenger, decision, run_settings)


def report(
    stage: CandidateStage, challenger: ChallengerStage, decision: PromotionDecision, settings: Settings
) -> TrainingReport:
    """The :class:`TrainingReport` of one pass through the stages."""
    m = challenger.measurements
    final_run = f"final:{challenger.best}+{challenger.calibration}"
    return TrainingReport(
        best_model=challenger.best,
        test_auc=float(challenger.test_metrics["auc"]),
        val_auc=dict(stage.val_aucs),
        candidate_test_auc={r["model"]: r["test_auc"] for r in stage.table},
        imbalance=dict(stage.imbalance),
        threshold=float(m["threshold"]["value"]),
        calibration=challenger.calibration,
        calibration_brier=dict(m["calibration"]["val_brier_oof"]),
        test_metrics=dict(challenger.test_metrics),
        train_auc=challenger.train_auc,
        shap_top5_share=m["shap"].get("top5_share"),
        shap_top5=list(m["shap"].get("top5", [])),
        fairness_max_disparity=m["fairness"].get("max_disparity"),
        fairness_column=m["fairness"].get("worst_column"),
        stress=dict(m["stress_slices"]),
        gates={g.name: g.passed for g in gate_results(m, settings.modeling)},
        model_version=challenger.version,
        semver=challenger.semver,
        promotion=decision.outcome,
        promotion_reason=decision.reason,
        run_ids={**stage.run_ids, final_run: challenger.run_id},
        tuning=dict(stage.tuning),
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
