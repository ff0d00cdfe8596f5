"""The training pipeline cut into the steps of the Dagster training graph.

:func:`~churn_assets.modeling.pipeline.train_and_register` runs everything in one call (CLI,
``train-table``). The Dagster assets need the same work as separate, restartable steps with their
results on disk between them:

1. :func:`run_candidates` — tune LightGBM (Optuna), fit the baselines, log every candidate as an MLflow
   run, choose the best on VALIDATION AUC and save it (``joblib``) → :class:`CandidateStage`.
2. :func:`evaluate_challenger` — calibrate the best candidate, choose the threshold, evaluate on test
   (metrics, reliability, SHAP, fairness, stress slices), log the final run and register the version
   (alias ``challenger``) → :class:`ChallengerStage` with every gate *measurement*.
3. :func:`gate_results` — the seven gates (limits from settings) over those measurements; the Dagster
   asset checks evaluate one gate each.
4. :func:`decide_promotion` — the promotion rule against the champion on the same holdout.

Everything here is plain Python; the stage results are JSON-serialisable (``to_json``/``from_json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from churn_assets.modeling import plots
from churn_assets.modeling.candidates import baseline_specs, fit_candidate
from churn_assets.modeling.evaluation import (
    GateResult,
    binary_metrics,
    calibrate,
    choose_threshold,
    fairness_report,
    reliability_curve,
    shap_summary,
)
from churn_assets.modeling.paths import optuna_storage_url
from churn_assets.modeling.pipeline import _candidate_metrics, fit_tuned_lightgbm
from churn_assets.modeling.registry import ModelRegistry, PromotionDecision
from churn_assets.modeling.splits import Splits
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.tuning import tune_lightgbm
from churn_assets.settings import ModelingSettings, Settings

GATES: tuple[str, ...] = (
    "auc_floor",
    "train_test_gap",
    "calibration",
    "threshold",
    "shap",
    "fairness",
    "stress_slices",
)
Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _JsonStage:
    def to_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(dataclasses.asdict(self)), indent=1))  # type: ignore[call-overload]
        return path

    @classmethod
    def from_json(cls, path: Path) -> Any:
        return cls(**json.loads(path.read_text()))


@dataclass
class CandidateStage(_JsonStage):
    """What the candidate step produced (see :func:`run_candidates`)."""

    best: str
    flavor: str
    model_path: str
    params: dict[str, Any]
    val_auc: float
    train_seconds: float
    table: list[dict[str, Any]]  # one row per candidate: the experiment table
    run_ids: dict[str, str]
    tuning: dict[str, Any]
    plots: dict[str, str] = field(default_factory=dict)

    def load_model(self) -> Any:
        return joblib.load(self.model_path)


def _sample(X: pd.DataFrame, y: pd.Series, max_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    if len(y) <= max_rows:
        return X, y
    keep, _ = train_test_split(
        np.arange(len(y)), train_size=max_rows, stratify=y.to_numpy(), random_state=seed
    )
    keep = np.sort(keep)
    return X.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True)


def sample_splits(splits: Splits, max_rows: int, seed: int = 42) -> Splits:
    """``splits`` with train and val each cut to a stratified sample of at most ``max_rows`` rows (test
    untouched); the same object when both are already small enough."""
    if len(splits.y_train) <= max_rows and len(splits.y_val) <= max_rows:
        return splits
    X_train, y_train = _sample(splits.X_train, splits.y_train, max_rows, seed)
    X_val, y_val = _sample(splits.X_val, splits.y_val, max_rows, seed)
    return dataclasses.replace(splits, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def run_candidates(
    splits: Splits,
    settings: Settings,
    workdir: Path,
    *,
    study_name: str,
    baselines: Sequence[str] | None = None,
    progress: Progress = _quiet,
) -> CandidateStage:
    """Tune LightGBM, fit the baselines, log each candidate as an MLflow run, keep the best (val AUC).

    Tuning and the baselines work on :func:`sample_splits` (at most ``sample_rows`` train / val rows,
    stratified) — RF and MLP do not scale to millions of rows on two cores; the tuned LightGBM is then
    refitted on the FULL train split. Every candidate is scored on the full val and test splits. The
    best model is saved to ``workdir/best_model.joblib``; plots of each candidate under
    ``workdir/<candidate>/``.
    """
    cfg = settings.modeling
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = configure(settings)
    sample = sample_splits(splits, cfg.sample_rows, cfg.seed)
    if sample is not splits:
        progress(f"tuning + baselines on a stratified sample of {len(sample.y_train):,} train rows")
    progress(f"tuning LightGBM: study {study_name}, {cfg.n_trials} trials / {cfg.timeout_seconds:.0f} s")
    tuned = tune_lightgbm(
        sample,
        optuna_storage_url(settings),
        study_name,
        cfg.n_trials,
        cfg.timeout_seconds,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
    )
    fitted = [fit_tuned_lightgbm(tuned, splits, cfg)]
    names = tuple(cfg.baselines if baselines is None else baselines)
    for spec in baseline_specs(cfg.seed, names, cfg.n_jobs):
        progress(f"fitting baseline {spec.name}")
        candidate = fit_candidate(spec, sample, "compare", cfg.n_jobs)
        if sample is not splits:  # choose on the full validation split like LightGBM
            candidate.val_auc = float(
                binary_metrics(splits.y_val, candidate.predict_proba(splits.X_val))["auc"]
            )
        fitted.append(candidate)

    table: list[dict[str, Any]] = []
    run_ids: dict[str, str] = {}
    candidate_plots: dict[str, str] = {}
    for c in fitted:
        metrics, p_test = _candidate_metrics(c, splits)
        metrics.update({f"val_auc_{k}": v for k, v in c.val_auc_by_imbalance.items()})
        roc = plots.roc_plot(splits.y_test, p_test, workdir / c.name / "roc.png", c.name)
        artifacts = [roc, plots.calibration_plot(splits.y_test, p_test, workdir / c.name / "calibration.png")]
        if isinstance(c.model, lgb.LGBMClassifier):
            gain = pd.Series(c.model.booster_.feature_importance("gain"), index=splits.features)
            artifacts.append(
                plots.importance_plot(gain, workdir / c.name / "importance.png", "LightGBM gain")
            )
        candidate_plots[c.name] = str(roc)
        logged = log_candidate_run(
            tracking, c.name, c.model, c.flavor, c.params, metrics, artifacts, tags={"role": "candidate"}
        )
        run_ids[c.name] = logged.run_id
        progress(f"logged MLflow run {logged.run_id} for {c.name}")
        table.append(
            {
                "model": c.name,
                "run_id": logged.run_id,
                "val_auc": c.val_auc,
                "test_auc": metrics["auc"],
                "recall": metrics["recall"],
                "precision": metrics["precision"],
                "f1": metrics["f1"],
                "imbalance": c.imbalance,
                "val_auc_none": c.val_auc_by_imbalance.get("none"),
                "val_auc_balanced": c.val_auc_by_imbalance.get("balanced"),
                "train_seconds": c.train_seconds,
                "params": {k: v for k, v in c.params.items() if k not in ("verbose", "random_state")},
            }
        )
    best = max(fitted, key=lambda c: c.val_auc)
    model_path = workdir / "best_model.joblib"
    joblib.dump(best.model, model_path)
    return CandidateStage(
        best=best.name,
        flavor=best.flavor,
        model_path=str(model_path),
        params=dict(best.params),
        val_auc=best.val_auc,
        train_seconds=best.train_seconds,
        table=table,
        run_ids=run_ids,
        tuning={
            "study": tuned.study_name,
            "storage": tuned.storage.split("@")[-1],
            "best_val_auc": tuned.best_val_auc,
            "complete": tuned.n_complete,
            "pruned": tuned.n_pruned,
            "run_now": tuned.n_run_now,
            "imbalance_auc": tuned.imbalance_auc,
            "best_params": tuned.best_params,
            "n_trials_budget": cfg.n_trials,
            "seconds_budget": cfg.timeout_seconds,
            "sample_train_rows": len(sample.y_train),
            "sample_val_rows": len(sample.y_val),
        },
        plots=candidate_plots,
    )


@dataclass
class ChallengerStage(_JsonStage):
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
    measurements: dict[str, Any]
    plots: dict[str, str]


def slice_masks(context: pd.DataFrame, cfg: ModelingSettings) -> dict[str, np.ndarray]:
    """Stress slices of the test rows: ``new_customers`` (``tenure_days < new_customer_days``) and
    ``high_value`` (``monthly_revenue`` in its top decile), when those columns exist."""
    masks: dict[str, np.ndarray] = {}
    if cfg.slice_tenure_column in context.columns:
        tenure = pd.to_numeric(context[cfg.slice_tenure_column], errors="coerce").to_numpy(dtype=float)
        masks["new_customers"] = tenure < cfg.new_customer_days
    if cfg.slice_revenue_column in context.columns:
        revenue = pd.to_numeric(context[cfg.slice_revenue_column], errors="coerce").to_numpy(dtype=float)
        if not np.isnan(revenue).all():
            masks["high_value"] = revenue >= float(np.nanquantile(revenue, 0.9))
    return masks


def evaluate_challenger(
    candidates: CandidateStage,
    splits: Splits,
    settings: Settings,
    data_hash: str,
    workdir: Path,
    actor: str = "dagster",
) -> ChallengerStage:
    """Calibrate + threshold the best candidate, evaluate it on test, log the final MLflow run and
    register it as a new version of the registered model (alias ``challenger``)."""
    cfg = settings.modeling
    workdir.mkdir(parents=True, exist_ok=True)
    raw = candidates.load_model()
    cal = calibrate(raw, splits.X_val, splits.y_val, cfg.seed)
    final = cal.model
    p_val = np.asarray(final.predict_proba(splits.X_val))[:, 1]
    p_test = np.asarray(final.predict_proba(splits.X_test))[:, 1]
    p_train = np.asarray(final.predict_proba(splits.X_train))[:, 1]
    threshold = choose_threshold(splits.y_val, p_val)
    test = binary_metrics(splits.y_test, p_test, threshold)
    val = binary_metrics(splits.y_val, p_val, threshold)
    train_auc = binary_metrics(splits.y_train, p_train)["auc"]

    rate = float(np.mean(splits.y_test))
    curve = reliability_curve(splits.y_test, p_test)
    cal_error = float(np.mean(np.abs(np.subtract(curve.observed_rate, curve.mean_predicted))))
    context = (
        splits.X_test
        if splits.test_context is None
        else pd.concat(
            [splits.X_test, splits.test_context.drop(columns=splits.X_test.columns, errors="ignore")], axis=1
        )
    )
    segment_cols = [c for c in cfg.segment_columns if c in context.columns]
    fairness = (
        fairness_report(
            splits.y_test,
            p_test,
            threshold,
            context[segment_cols],
            cfg.gate_max_disparity,
            min_positives=cfg.fairness_min_positives,
        )
        if segment_cols
        else None
    )
    y_test = np.asarray(splits.y_test).astype(int)
    stress = {}
    for name, mask in slice_masks(context, cfg).items():
        stress[name] = {
            "rows": int(mask.sum()),
            "positives": int(y_test[mask].sum()),
            **{k: v for k, v in binary_metrics(y_test[mask], p_test[mask], threshold).items() if k != "n"},
        }

    artifacts = {
        "roc": plots.roc_plot(splits.y_test, p_test, workdir / "roc.png", candidates.best),
        "reliability": plots.calibration_plot(
            splits.y_test, p_test, workdir / "calibration.png", candidates.best
        ),
    }
    shap = None
    if isinstance(raw, lgb.LGBMClassifier):
        shap = shap_summary(raw, splits.X_test, max_rows=cfg.shap_max_rows, seed=cfg.seed)
        artifacts["shap"] = plots.shap_bar_plot(shap.mean_abs, workdir / "shap_summary.png")
    files: list[Path] = list(artifacts.values())
    if fairness is not None:
        fairness.by_segment.to_csv(workdir / "fairness_by_segment.csv", index=False)
        files.append(workdir / "fairness_by_segment.csv")

    measurements: dict[str, Any] = {
        "auc_floor": {"test_auc": test["auc"]},
        "train_test_gap": {"train_auc": train_auc, "test_auc": test["auc"], "gap": train_auc - test["auc"]},
        "calibration": {
            "method": cal.method,
            "val_brier_oof": cal.brier,
            "test_brier": test["brier"],
            "no_skill_brier": rate * (1 - rate),
            "calibration_error": cal_error,
            "reliability": {"mean_predicted": curve.mean_predicted, "observed_rate": curve.observed_rate},
        },
        "threshold": {
            "rule": "max F1 on the calibrated validation scores (ties: higher threshold)",
            "value": threshold,
            "val": {k: val[k] for k in ("recall", "precision", "f1")},
            "test": {k: test[k] for k in ("recall", "precision", "f1")},
            "test_positive_rate": rate,
        },
        "shap": (
            {
                "method": "LightGBM predict(pred_contrib=True)",
                "top5_share": shap.top5_share,
                "top5": list(shap.mean_abs.index[:5]),
                "mean_abs": {k: float(v) for k, v in shap.mean_abs.iloc[:15].items()},
            }
            if shap
            else {"method": f"not applicable: {candidates.best} is not LightGBM", "top5_share": None}
        ),
        "fairness": (
            {
                "columns": segment_cols,
                "max_disparity": fairness.max_disparity,
                "worst_column": fairness.worst_column,
                "by_segment": fairness.by_segment[
                    ["segment", "value", "n", "positive_rate", "recall", "precision", "auc"]
                ]
                .round(4)
                .to_dict("records"),
            }
            if fairness
            else {"columns": [], "max_disparity": None}
        ),
        "stress_slices": stress,
    }

    final_metrics = {
        **{k: v for k, v in test.items() if k != "n"},
        "train_auc": train_auc,
        "val_auc": candidates.val_auc,
        "threshold": threshold,
        "calibration_error": cal_error,
        **({"shap_top5_share": shap.top5_share} if shap else {}),
        **({"fairness_max_disparity": fairness.max_disparity} if fairness else {}),
        **{f"stress_{n}_auc": s["auc"] for n, s in stress.items()},
    }
    gates = gate_results(measurements, cfg)
    tracking = configure(settings)
    run_name = f"final:{candidates.best}+{cal.method}"
    logged = log_candidate_run(
        tracking,
        run_name,
        final,
        "lightgbm" if cal.method == "none" and candidates.flavor == "lightgbm" else "sklearn",
        {**candidates.params, "calibration": cal.method, "threshold_rule": "max_f1_on_val"},
        final_metrics,
        files,
        tags={"role": "final", "data_sha256": data_hash},
    )
    registry = ModelRegistry(settings)
    registered = registry.register(logged, splits.features, data_hash, final_metrics, gates, actor=actor)
    return ChallengerStage(
        model_name=registered.name,
        version=registered.version,
        semver=registered.semver,
        run_id=logged.run_id,
        best=candidates.best,
        calibration=cal.method,
        data_sha256=data_hash,
        features=list(splits.features),
        test_metrics={k: v for k, v in test.items()},
        train_auc=train_auc,
        measurements=measurements,
        plots={k: str(v) for k, v in artifacts.items()},
    )


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def gate_results(measurements: Mapping[str, Any], cfg: ModelingSettings) -> list[GateResult]:
    """The seven gates over :attr:`ChallengerStage.measurements` (limits from ``cfg``), in :data:`GATES` order.

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
    m = measurements
    auc = _num(m["auc_floor"]["test_auc"])
    gap = _num(m["train_test_gap"]["gap"])
    cal = m["calibration"]
    cal_err = _num(cal["calibration_error"])
    thr = m["threshold"]
    recall, precision = _num(thr["test"]["recall"]), _num(thr["test"]["precision"])
    shap_share = _num(m["shap"].get("top5_share"))
    disparity = _num(m["fairness"].get("max_disparity"))
    slice_aucs = [_num(s.get("auc")) for s in m["stress_slices"].values()]
    slice_aucs = [a for a in slice_aucs if not math.isnan(a)]
    worst_slice = min(slice_aucs) if slice_aucs else float("nan")
    return [
        GateResult("auc_floor", auc, cfg.gate_min_auc, auc >= cfg.gate_min_auc),
        GateResult("train_test_gap", gap, cfg.gate_max_auc_gap, gap <= cfg.gate_max_auc_gap),
        GateResult(
            "calibration",
            cal_err,
            cfg.gate_max_calibration_error,
            cal_err <= cfg.gate_max_calibration_error
            and _num(cal["test_brier"]) < _num(cal["no_skill_brier"]),
        ),
        GateResult(
            "threshold",
            recall,
            cfg.gate_min_recall,
            recall >= cfg.gate_min_recall and precision > _num(thr["test_positive_rate"]),
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


def decide_promotion(
    settings: Settings,
    challenger: ChallengerStage,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    actor: str = "dagster",
) -> PromotionDecision:
    """Score the champion on the same test holdout and apply the promotion rule (audit-logged).

    Gates are re-evaluated with the current limits; with no champion yet, a challenger that passes
    every gate is promoted (``manual`` mode: marked pending instead).
    """
    registry = ModelRegistry(settings)
    gates = gate_results(challenger.measurements, settings.modeling)
    champion_auc = registry.holdout_auc("champion", X_test, y_test)
    return registry.consider(
        challenger.version, float(challenger.test_metrics["auc"]), champion_auc, gates, actor=actor
    )
