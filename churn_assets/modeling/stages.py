"""The training pipeline cut into the steps of the Dagster training graph.

The Dagster assets run these as separate, restartable steps with their results on disk between
them; :func:`~churn_assets.modeling.pipeline.train_and_register` (``train-table``, library) runs the
same functions in one call:

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
import logging
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
from threadpoolctl import threadpool_limits

from churn_assets.modeling import plots
from churn_assets.modeling.candidates import (
    FittedCandidate,
    baseline_specs,
    fit_candidate,
    lightgbm_options,
    lightgbm_spec,
    with_options,
)
from churn_assets.modeling.evaluation import (
    GateResult,
    binary_metrics,
    calibrate,
    choose_threshold,
    fairness_report,
    proba_and_response,
    reliability_curve,
    shap_summary,
)
from churn_assets.modeling.names import GATES as GATES  # re-exported
from churn_assets.modeling.paths import optuna_storage_url
from churn_assets.modeling.registry import LIGHTGBM_PARAMS_TAG, ModelRegistry, PromotionDecision
from churn_assets.modeling.splits import Splits
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.tuning import lgbm_params, tune_lightgbm
from churn_assets.settings import ModelingSettings, Settings

Progress = Callable[[str], None]
log = logging.getLogger(__name__)

CHUNK_ROWS = 500_000


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
    scores_path: str = ""  # the best model's scores on every split (see :meth:`load_scores`)
    lightgbm_params: dict[str, Any] = field(default_factory=dict)  # search-space form (retraining)
    val_aucs: dict[str, float] = field(default_factory=dict)
    imbalance: dict[str, str] = field(default_factory=dict)

    def load_model(self) -> Any:
        return joblib.load(self.model_path)

    def load_scores(self) -> dict[str, np.ndarray]:
        """``proba_<split>`` (``predict_proba[:, 1]``) and ``response_<split>`` (the calibration score,
        ``evaluation.response``) of the best model for train, val and test; ``train_index`` (positions
        in the train split) when only a sample of train was scored."""
        with np.load(self.scores_path) as data:
            return {k: data[k] for k in data.files}


def sample_index(y: pd.Series, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a stratified sample of at most ``max_rows`` rows; None when ``y`` is small enough."""
    if len(y) <= max_rows:
        return None
    keep, _ = train_test_split(
        np.arange(len(y)), train_size=max_rows, stratify=y.to_numpy(), random_state=seed
    )
    return np.sort(keep)


def _take(X: pd.DataFrame, y: pd.Series, index: np.ndarray | None) -> tuple[pd.DataFrame, pd.Series]:
    if index is None:
        return X, y
    return X.iloc[index].reset_index(drop=True), y.iloc[index].reset_index(drop=True)


def _sample(X: pd.DataFrame, y: pd.Series, max_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    return _take(X, y, sample_index(y, max_rows, seed))


def sample_splits(splits: Splits, max_rows: int, seed: int = 42) -> Splits:
    """``splits`` with train and val each cut to a stratified sample of at most ``max_rows`` rows (test
    untouched); the same object when both are already small enough."""
    if len(splits.y_train) <= max_rows and len(splits.y_val) <= max_rows:
        return splits
    X_train, y_train = _sample(splits.X_train, splits.y_train, max_rows, seed)
    X_val, y_val = _sample(splits.X_val, splits.y_val, max_rows, seed)
    return dataclasses.replace(splits, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def split_scores(
    model: Any, X: pd.DataFrame, split: str, with_response: bool = True
) -> dict[str, np.ndarray]:
    """``proba_<split>`` and (``with_response``) ``response_<split>`` of a model
    (:func:`evaluation.proba_and_response`; LightGBM gives both from one pass anyway), predicted in
    row chunks: a model's input conversion (float matrix, one-hot encoding) then costs memory for
    ``CHUNK_ROWS`` rows at a time, not for a multi-million-row split."""
    both = with_response or isinstance(model, lgb.LGBMClassifier)
    parts = [
        proba_and_response(model, X.iloc[i : i + CHUNK_ROWS])
        if both
        else (np.asarray(model.predict_proba(X.iloc[i : i + CHUNK_ROWS]))[:, 1], None)
        for i in range(0, len(X), CHUNK_ROWS)
    ]
    out = {f"proba_{split}": np.concatenate([p for p, _ in parts])}
    if both:
        out[f"response_{split}"] = np.concatenate([r for _, r in parts if r is not None])
    return out


def fit_tuned_lightgbm(
    search_params: Mapping[str, Any], splits: Splits, cfg: ModelingSettings
) -> FittedCandidate:
    """Fit LightGBM on the train split with search-space parameters (``imbalance`` included, and
    ``n_estimators`` = the study's best iteration), recording its class-imbalance choice.

    A large train split is fitted with quantized gradients (``cfg.lightgbm_quantized_gradients``) when
    the parameters allow it (:func:`~churn_assets.modeling.candidates.with_options`: no row
    bagging, no column sampling); if LightGBM rejects that fit, it is redone with exact gradients
    rather than failing the stage."""
    params = lgbm_params(dict(search_params), splits)
    requested = lightgbm_options(
        cfg.lightgbm_quantized_gradients, len(splits.y_train), cfg.lightgbm_quantized_min_rows
    )
    options = with_options(params, requested)
    if requested and not options:
        log.info("LightGBM params sample rows or columns: exact gradients (quantized training unsafe)")
    try:
        lgbm = fit_candidate(lightgbm_spec(params, cfg.seed, cfg.n_jobs, options), splits, "none", cfg.n_jobs)
    except lgb.basic.LightGBMError as exc:
        if not options:
            raise
        log.warning("quantized-gradient LightGBM fit failed (%s); refitting with exact gradients", exc)
        lgbm = fit_candidate(lightgbm_spec(params, cfg.seed, cfg.n_jobs), splits, "none", cfg.n_jobs)
    imbalance = str(search_params.get("imbalance", "none"))
    lgbm.params["imbalance"] = imbalance
    lgbm.imbalance = "balanced" if imbalance == "balanced" else "none"
    return lgbm


def candidate_metrics(
    c: FittedCandidate, y_val: pd.Series, y_test: pd.Series, p_val: np.ndarray, p_test: np.ndarray
) -> dict[str, float]:
    """Test metrics of a candidate at its own val-F1 threshold (from its precomputed val/test scores)."""
    threshold = choose_threshold(y_val, p_val)
    metrics = binary_metrics(y_test, p_test, threshold)
    metrics = {k: v for k, v in metrics.items() if k not in ("positive_rate", "n")}
    metrics.update(val_auc=c.val_auc, threshold=threshold, train_seconds=c.train_seconds)
    return metrics


def run_candidates(
    splits: Splits,
    settings: Settings,
    workdir: Path,
    *,
    study_name: str,
    baselines: Sequence[str] | None = None,
    fixed_params: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> CandidateStage:
    """Tune LightGBM, fit the baselines, log each candidate as an MLflow run, keep the best (val AUC).

    Tuning and the baselines work on :func:`sample_splits` (at most ``sample_rows`` train / val rows,
    stratified) — RF and MLP do not scale to millions of rows on two cores; the tuned LightGBM is then
    refitted on the FULL train split. ``fixed_params`` (search-space form, e.g. the champion's
    ``lightgbm_params`` registry tag) skips the study: LightGBM is refitted with them as they are.
    Every candidate predicts the same evaluation rows once — val and test, each a stratified sample
    of at most ``eval_rows`` (the full splits when smaller) — and selection, metrics and plots reuse
    those scores; the best one then predicts the full val and test splits and ``eval_rows`` train
    rows, saved to ``workdir/scores.npz`` (with ``train_index`` when train was sampled) for the
    challenger step. The best model goes to
    ``workdir/best_model.joblib``, plots of each candidate under ``workdir/<candidate>/``.
    """
    cfg = settings.modeling
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = configure(settings)
    sample = sample_splits(splits, cfg.sample_rows, cfg.seed)
    if sample is not splits:
        progress(f"tuning + baselines on a stratified sample of {len(sample.y_train):,} train rows")
    if fixed_params is None:
        progress(f"tuning LightGBM: study {study_name}, {cfg.n_trials} trials / {cfg.timeout_seconds:.0f} s")
        tuned = tune_lightgbm(
            sample,
            optuna_storage_url(settings),
            study_name,
            cfg.n_trials,
            cfg.timeout_seconds,
            seed=cfg.seed,
            n_jobs=cfg.n_jobs,
            options=lightgbm_options(
                cfg.lightgbm_quantized_gradients, len(sample.y_train), cfg.lightgbm_quantized_min_rows
            ),
        )
        search_params: dict[str, Any] = dict(tuned.best_params)
        tuning: dict[str, Any] = {
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
        }
    else:
        search_params = dict(fixed_params)
        tuning = {"study": None, "fixed_params": search_params, "complete": 0, "pruned": 0, "run_now": 0}
    tuning.update(sample_train_rows=len(sample.y_train), sample_val_rows=len(sample.y_val))

    progress("fitting LightGBM on the full train split")
    lgbm = fit_tuned_lightgbm(search_params, splits, cfg)
    if fixed_params is None:
        lgbm.val_auc_by_imbalance = dict(tuning["imbalance_auc"])
    fitted = [lgbm]
    names = tuple(cfg.baselines if baselines is None else baselines)
    for spec in baseline_specs(cfg.seed, names, cfg.n_jobs):
        progress(f"fitting baseline {spec.name}")
        fitted.append(fit_candidate(spec, sample, "compare", cfg.n_jobs))

    # Every candidate is compared on the same evaluation rows: val and test, each cut to a stratified
    # sample of at most eval_rows (the full splits when smaller); the winner is scored in full below.
    val_index = sample_index(splits.y_val, cfg.eval_rows, cfg.seed)
    test_index = sample_index(splits.y_test, cfg.eval_rows, cfg.seed)
    X_val, y_val = _take(splits.X_val, splits.y_val, val_index)
    X_test, y_test = _take(splits.X_test, splits.y_test, test_index)
    if val_index is not None or test_index is not None:
        progress(f"comparing candidates on {len(y_val):,} val and {len(y_test):,} test rows (stratified)")
    tuning.update(eval_val_rows=len(y_val), eval_test_rows=len(y_test))
    table: list[dict[str, Any]] = []
    run_ids: dict[str, str] = {}
    candidate_plots: dict[str, str] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for c in fitted:
        with threadpool_limits(limits=cfg.n_jobs):
            scores[c.name] = {  # calibration scores are needed for the best model only
                **split_scores(c.model, X_val, "val", with_response=False),
                **split_scores(c.model, X_test, "test", with_response=False),
            }
        p_val, p_test = scores[c.name]["proba_val"], scores[c.name]["proba_test"]
        c.val_auc = float(binary_metrics(y_val, p_val)["auc"])
        metrics = candidate_metrics(c, y_val, y_test, p_val, p_test)
        metrics.update({f"val_auc_{k}": v for k, v in c.val_auc_by_imbalance.items()})
        metrics.update(eval_val_rows=float(len(y_val)), eval_test_rows=float(len(y_test)))
        roc = plots.roc_plot(y_test, p_test, workdir / c.name / "roc.png", c.name)
        artifacts = [roc, plots.calibration_plot(y_test, p_test, workdir / c.name / "calibration.png")]
        if isinstance(c.model, lgb.LGBMClassifier):
            gain = pd.Series(c.model.booster_.feature_importance("gain"), index=splits.features)
            artifacts.append(
                plots.importance_plot(gain, workdir / c.name / "importance.png", "LightGBM gain")
            )
        candidate_plots[c.name] = str(roc)
        logged = log_candidate_run(
            tracking,
            c.name,
            c.model,
            c.flavor,
            c.params,
            metrics,
            artifacts,
            tags={"role": "candidate"},
            input_example=X_val,
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
    train_index = sample_index(splits.y_train, cfg.eval_rows, cfg.seed)
    progress(
        f"best: {best.name}; scoring the full val and test splits and "
        f"{len(splits.y_train) if train_index is None else len(train_index):,} train rows with it"
    )
    best_scores = scores.pop(best.name)
    del scores
    with threadpool_limits(limits=cfg.n_jobs):
        X_train = splits.X_train if train_index is None else splits.X_train.iloc[train_index]
        best_scores.update(split_scores(best.model, X_train, "train"))
        for name, X, index in (("val", splits.X_val, val_index), ("test", splits.X_test, test_index)):
            if index is not None:  # compared on a sample: the challenger needs every row
                best_scores.update(split_scores(best.model, X, name))
            elif f"response_{name}" not in best_scores:  # a scikit-learn model won
                best_scores[f"response_{name}"] = split_scores(best.model, X, name)[f"response_{name}"]
    if train_index is not None:
        best_scores["train_index"] = train_index
    scores_path = workdir / "scores.npz"
    np.savez(scores_path, **best_scores)  # type: ignore[arg-type]
    return CandidateStage(
        best=best.name,
        flavor=best.flavor,
        model_path=str(model_path),
        params=dict(best.params),
        val_auc=best.val_auc,
        train_seconds=best.train_seconds,
        table=table,
        run_ids=run_ids,
        tuning=tuning,
        plots=candidate_plots,
        scores_path=str(scores_path),
        lightgbm_params=search_params,
        val_aucs={c.name: c.val_auc for c in fitted},
        imbalance={c.name: c.imbalance for c in fitted},
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


def evaluate_challenger(
    candidates: CandidateStage,
    splits: Splits,
    settings: Settings,
    data_hash: str,
    workdir: Path,
    actor: str = "dagster",
) -> ChallengerStage:
    """Calibrate + threshold the best candidate, evaluate it on test, log the final MLflow run and
    register it as a new version of the registered model (alias ``challenger``).

    Works on the best model's saved scores (:meth:`CandidateStage.load_scores`): calibration maps them
    to the final probabilities, so nothing is predicted again except one validation pass to fit a
    chosen calibrator through the model, and SHAP on a test sample. ``splits.X_train`` is not used
    (it may be a labels-only part)."""
    cfg = settings.modeling
    workdir.mkdir(parents=True, exist_ok=True)
    raw = candidates.load_model()
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
    final = cal.model
    p_val, p_test, p_train = (
        cal.apply(scores[f"proba_{n}"], scores[f"response_{n}"]) for n in ("val", "test", "train")
    )
    train_index = scores.get("train_index")  # the train rows the best model scored (None: all)
    del scores
    threshold = choose_threshold(splits.y_val, p_val)
    test = binary_metrics(splits.y_test, p_test, threshold)
    val = binary_metrics(splits.y_val, p_val, threshold)
    y_train = splits.y_train if train_index is None else splits.y_train.iloc[train_index]
    train_auc = binary_metrics(y_train, p_train)["auc"]  # on the train rows the best model scored

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
    shap_na = (
        f"not applicable: {candidates.best} is not LightGBM"
        if shap is None
        else f"not applicable: {len(splits.features)} features (the top 5 hold everything)"
        if len(splits.features) <= 5
        else None
    )
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
            if shap and shap_na is None
            else {"method": shap_na, "top5_share": None}
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
        "train_seconds": candidates.train_seconds,
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
        input_example=splits.X_test,
    )
    registry = ModelRegistry(settings)
    extra = (
        {LIGHTGBM_PARAMS_TAG: json.dumps(_clean(candidates.lightgbm_params))}
        if candidates.best == "lightgbm"
        else {}
    )
    registered = registry.register(
        logged, splits.features, data_hash, final_metrics, gates, actor=actor, extra_tags=extra
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


def retrain_challenger(
    splits: Splits,
    settings: Settings,
    data_hash: str,
    workdir: Path,
    *,
    study_name: str | None = None,
    baselines: Sequence[str] | None = None,
    progress: Progress = _quiet,
    actor: str = "retrain",
) -> tuple[CandidateStage, ChallengerStage]:
    """Retrain on the latest training set and register a challenger, reusing the stages.

    With ``settings.modeling.retune_on_retrain`` false (default) and a LightGBM champion, LightGBM is
    refitted with the champion's hyperparameters (registry tag ``lightgbm_params``) — no study;
    otherwise (no champion, a non-LightGBM champion, or retuning asked for) the study runs as in
    :func:`run_candidates`. The promotion decision is left to :func:`decide_promotion`.
    """
    cfg = settings.modeling
    fixed = None if cfg.retune_on_retrain else ModelRegistry(settings).lightgbm_params("champion")
    progress(
        "retraining with the champion's LightGBM parameters (no re-tuning)"
        if fixed is not None
        else "retraining with a (re)tuned LightGBM"
    )
    stage = run_candidates(
        splits,
        settings,
        workdir / "candidates",
        study_name=study_name or f"{cfg.study_name}-{data_hash[:8]}",
        baselines=baselines,
        fixed_params=fixed,
        progress=progress,
    )
    challenger = evaluate_challenger(stage, splits, settings, data_hash, workdir / "challenger", actor=actor)
    return stage, challenger
