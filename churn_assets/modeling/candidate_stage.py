"""The candidate step of training: tune LightGBM and XGBoost, fit the baselines, blend the best (the
ENSEMBLE candidate), log each, keep the best.

:func:`run_candidates` — tune LightGBM and XGBoost (Optuna), fit the baselines, blend the best of them
(``ensemble.choose_blend``, weights on validation), log every candidate as an MLflow run and the
experiment table on the parent run, choose the best on VALIDATION AUC and save it (``joblib``) with its
scores on every split →
:class:`CandidateStage`. :func:`run_retraining_candidates` is the same step as the ``training/candidates``
asset runs it: the retune-or-refit choice of a retraining (``settings.modeling.retune_on_retrain``).
The next step is ``challenger_stage.evaluate_challenger``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from churn_assets.modeling import plots
from churn_assets.modeling.candidates import (
    DEFAULT_XGBOOST_PARAMS,
    FittedCandidate,
    baseline_specs,
    fit_candidate,
    lightgbm_options,
    lightgbm_spec,
    with_options,
    xgboost_spec,
)
from churn_assets.modeling.ensemble import ENSEMBLE, OOF_TOLERANCE, Blend, BlendEnsemble, choose_blend
from churn_assets.modeling.evaluation import binary_metrics, choose_threshold, proba_and_response
from churn_assets.modeling.paths import optuna_storage_url
from churn_assets.modeling.registry import CHAMPION, ModelRegistry
from churn_assets.modeling.splits import Splits
from churn_assets.modeling.stage_json import JsonStage
from churn_assets.modeling.tracking import Tracking, configure, log_candidate_run, log_experiment_table
from churn_assets.modeling.tuning import TrialJob, lgbm_params, tune_lightgbm, tune_xgboost, xgboost_params
from churn_assets.settings import ModelingSettings, Settings

Progress = Callable[[str], None]
log = logging.getLogger(__name__)

CHUNK_ROWS = 500_000


class DistributedTrainer(Protocol):
    """A cluster trainer (``compute.engine = dask``: ``churn_assets.compute.training.DaskTrainer``): fits
    LightGBM on the training set's shards where they are held and runs Optuna trials as cluster tasks."""

    label: str

    @property
    def workers(self) -> int: ...

    def fit_lightgbm(
        self,
        params: Mapping[str, Any],
        features: Sequence[str],
        categories: Mapping[str, Sequence[str]],
        seed: int,
    ) -> tuple[lgb.LGBMClassifier, dict[int, int]]: ...

    def run_trials(self, job: TrialJob, n_trials: int) -> int: ...


def quiet(_message: str) -> None:
    """The default progress callback: report nothing."""
    return None


@dataclass
class CandidateStage(JsonStage):
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
    members: dict[str, float] = field(default_factory=dict)  # an ensemble's member -> weight
    selectable: list[str] = field(default_factory=list)  # the candidates the best was chosen among
    experiment_run_id: str = ""  # the MLflow run holding the experiment table

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
    return replace(splits, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


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


def fit_lightgbm_distributed(
    trainer: DistributedTrainer, search_params: Mapping[str, Any], splits: Splits, cfg: ModelingSettings
) -> tuple[FittedCandidate, dict[int, int]]:
    """:func:`fit_tuned_lightgbm` on the cluster: LightGBM data-parallel on the train split's shards
    (exact gradients), its validation AUC computed here; the candidate and the train rows per shard."""
    params = lgbm_params(dict(search_params), splits)
    categories = {
        c: [str(v) for v in splits.X_train[c].cat.categories]
        for c in splits.features
        if isinstance(splits.X_train[c].dtype, pd.CategoricalDtype)
    }
    start = time.perf_counter()
    model, rows = trainer.fit_lightgbm(params, splits.features, categories, cfg.seed)
    seconds = time.perf_counter() - start
    with threadpool_limits(limits=cfg.n_jobs):
        val_auc = float(
            binary_metrics(splits.y_val, split_scores(model, splits.X_val, "val", False)["proba_val"])["auc"]
        )
    imbalance = str(search_params.get("imbalance", "none"))
    candidate = FittedCandidate(
        name="lightgbm",
        model=model,
        params={**params, "imbalance": imbalance},
        flavor="lightgbm",
        val_auc=val_auc,
        train_seconds=seconds,
        imbalance="balanced" if imbalance == "balanced" else "none",
        val_auc_by_imbalance={imbalance: val_auc},
    )
    return candidate, rows


def fit_xgboost(search_params: Mapping[str, Any], splits: Splits, cfg: ModelingSettings) -> FittedCandidate:
    """Fit XGBoost on the train split with search-space parameters (``imbalance`` included), recording
    its class-imbalance choice."""
    spec = xgboost_spec(xgboost_params(dict(search_params), splits), cfg.seed, cfg.n_jobs)
    fitted = fit_candidate(spec, splits, "none", cfg.n_jobs)
    imbalance = str(search_params.get("imbalance", "none"))
    fitted.params["imbalance"] = imbalance
    fitted.imbalance = "balanced" if imbalance == "balanced" else "none"
    return fitted


def _xgboost_search_params(
    sample: Splits, settings: Settings, study_name: str, tune: bool, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    """XGBoost's search-space parameters and its ``tuning`` record: the best of the study
    ``<study_name>-xgboost`` on ``sample`` (same budget as LightGBM's), or, when nothing is tuned (a
    retraining with the champion's LightGBM parameters), ``DEFAULT_XGBOOST_PARAMS``."""
    cfg = settings.modeling
    if not tune:
        return dict(DEFAULT_XGBOOST_PARAMS), {"study": None, "fixed_params": DEFAULT_XGBOOST_PARAMS}
    name = f"{study_name}-xgboost"
    progress(f"tuning XGBoost: study {name}, {cfg.n_trials} trials / {cfg.timeout_seconds:.0f} s")
    tuned = tune_xgboost(
        sample,
        optuna_storage_url(settings),
        name,
        cfg.n_trials,
        cfg.timeout_seconds,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
    )
    return dict(tuned.best_params), {
        "study": tuned.study_name,
        "best_val_auc": tuned.best_val_auc,
        "complete": tuned.n_complete,
        "pruned": tuned.n_pruned,
        "run_now": tuned.n_run_now,
        "imbalance_auc": tuned.imbalance_auc,
        "best_params": tuned.best_params,
    }


def candidate_metrics(
    c: FittedCandidate, y_val: pd.Series, y_test: pd.Series, p_val: np.ndarray, p_test: np.ndarray
) -> dict[str, float]:
    """Test metrics of a candidate at its own val-F1 threshold (from its precomputed val/test scores)."""
    threshold = choose_threshold(y_val, p_val)
    metrics = binary_metrics(y_test, p_test, threshold)
    metrics = {k: v for k, v in metrics.items() if k not in ("positive_rate", "n")}
    metrics.update(val_auc=c.val_auc, threshold=threshold, train_seconds=c.train_seconds)
    return metrics


def _search_params(
    sample: Splits,
    settings: Settings,
    study_name: str,
    fixed_params: Mapping[str, Any] | None,
    progress: Progress,
    trainer: DistributedTrainer | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """LightGBM's search-space parameters and the ``tuning`` record: the Optuna study's best on
    ``sample``, or ``fixed_params`` as they are (no study)."""
    cfg = settings.modeling
    if fixed_params is not None:
        params = dict(fixed_params)
        return params, {"study": None, "fixed_params": params, "complete": 0, "pruned": 0, "run_now": 0}
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
        runner=None if trainer is None else trainer.run_trials,
    )
    return dict(tuned.best_params), {
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


@dataclass
class _EvalRows:
    """The val / test rows every candidate is compared on (stratified samples of at most ``eval_rows``;
    ``*_index`` None = the full split)."""

    val_index: np.ndarray | None
    test_index: np.ndarray | None
    X_val: pd.DataFrame
    y_val: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series

    @classmethod
    def of(cls, splits: Splits, max_rows: int, seed: int) -> _EvalRows:
        val_index = sample_index(splits.y_val, max_rows, seed)
        test_index = sample_index(splits.y_test, max_rows, seed)
        return cls(
            val_index,
            test_index,
            *_take(splits.X_val, splits.y_val, val_index),
            *_take(splits.X_test, splits.y_test, test_index),
        )


def _log_candidate(
    c: FittedCandidate,
    rows: _EvalRows,
    scores: dict[str, np.ndarray],
    features: Sequence[str],
    workdir: Path,
    tracking: Tracking,
    tags: Mapping[str, str] | None = None,
    extra_metrics: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], str]:
    """Metrics (plus ``extra_metrics``) + plots of one candidate on the evaluation rows, logged as an
    MLflow run: its row of the experiment table and the path of its ROC plot. Sets ``c.val_auc`` (on
    the evaluation rows)."""
    p_val, p_test = scores["proba_val"], scores["proba_test"]
    c.val_auc = float(binary_metrics(rows.y_val, p_val)["auc"])
    metrics = candidate_metrics(c, rows.y_val, rows.y_test, p_val, p_test)
    metrics.update(extra_metrics or {})
    metrics.update({f"val_auc_{k}": v for k, v in c.val_auc_by_imbalance.items()})
    metrics.update(eval_val_rows=float(len(rows.y_val)), eval_test_rows=float(len(rows.y_test)))
    roc = plots.roc_plot(rows.y_test, p_test, workdir / c.name / "roc.png", c.name)
    artifacts = [roc, plots.calibration_plot(rows.y_test, p_test, workdir / c.name / "calibration.png")]
    if isinstance(c.model, lgb.LGBMClassifier):
        gain = pd.Series(c.model.booster_.feature_importance("gain"), index=list(features))
        artifacts.append(plots.importance_plot(gain, workdir / c.name / "importance.png", "LightGBM gain"))
    logged = log_candidate_run(
        tracking,
        c.name,
        c.model,
        c.flavor,
        c.params,
        metrics,
        artifacts,
        tags={"role": "candidate", **(tags or {})},
        input_example=rows.X_val,
    )
    row = {
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
    return row, str(roc)


def _ensemble(
    fitted: Sequence[FittedCandidate],
    scores: dict[str, dict[str, np.ndarray]],
    rows: _EvalRows,
    cfg: ModelingSettings,
) -> tuple[FittedCandidate, dict[str, np.ndarray], Blend] | None:
    """The ENSEMBLE candidate from the candidates' evaluation-row scores (no member predicts again):
    the candidate, its scores and the :class:`~.ensemble.Blend`; None when no blend of two or more
    candidates is chosen (``ensemble.choose_blend``)."""
    blend = choose_blend(
        {c.name: scores[c.name]["proba_val"] for c in fitted},
        {c.name: c.val_auc for c in fitted},
        rows.y_val,
        cfg.ensemble_max_members,
        cfg.seed,
    )
    if blend is None:
        return None
    by_name = {c.name: c for c in fitted}
    model = BlendEnsemble(blend.names, [by_name[n].model for n in blend.names], blend.weights)
    candidate = FittedCandidate(
        name=ENSEMBLE,
        model=model,
        params={**blend.params(), "imbalance": "none"},  # the blend weighs no class; its members chose
        flavor="sklearn",
        val_auc=blend.val_auc,
        train_seconds=sum(by_name[n].train_seconds for n in blend.names),
        imbalance="none",
    )
    blended = {
        f"proba_{split}": model.blend({n: scores[n][f"proba_{split}"] for n in blend.names})
        for split in ("val", "test")
    }
    return candidate, blended, blend


def _score_best(
    best: FittedCandidate,
    scores: dict[str, np.ndarray],
    splits: Splits,
    rows: _EvalRows,
    cfg: ModelingSettings,
    progress: Progress,
) -> dict[str, np.ndarray]:
    """The best model's scores for the challenger step: ``eval_rows`` train rows (``train_index`` when
    sampled) and the FULL val and test splits (``scores``: its scores on the evaluation rows)."""
    train_index = sample_index(splits.y_train, cfg.eval_rows, cfg.seed)
    progress(
        f"best: {best.name}; scoring the full val and test splits and "
        f"{len(splits.y_train) if train_index is None else len(train_index):,} train rows with it"
    )
    with threadpool_limits(limits=cfg.n_jobs):
        X_train = splits.X_train if train_index is None else splits.X_train.iloc[train_index]
        scores.update(split_scores(best.model, X_train, "train"))
        for name, X, index in (
            ("val", splits.X_val, rows.val_index),
            ("test", splits.X_test, rows.test_index),
        ):
            if index is not None:  # compared on a sample: the challenger needs every row
                scores.update(split_scores(best.model, X, name))
            elif f"response_{name}" not in scores:  # a scikit-learn model won
                scores[f"response_{name}"] = split_scores(best.model, X, name)[f"response_{name}"]
    if train_index is not None:
        scores["train_index"] = train_index
    return scores


def run_candidates(
    splits: Splits,
    settings: Settings,
    workdir: Path,
    *,
    study_name: str,
    baselines: Sequence[str] | None = None,
    fixed_params: Mapping[str, Any] | None = None,
    progress: Progress = quiet,
    trainer: DistributedTrainer | None = None,
) -> CandidateStage:
    """Tune LightGBM and XGBoost, fit the baselines, blend the best, log each candidate as an MLflow run
    (and the experiment table, ``tracking.log_experiment_table``), keep the best (val AUC).

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

    With a ``trainer`` (``compute.engine = dask``) the Optuna trials run as cluster tasks and LightGBM is
    fitted data-parallel on the training set's shards when the train split has at least
    ``compute.lightgbm_data_parallel_min_rows`` rows (a smaller one is fitted here, as by the local
    engine); the baselines, which have no distributed trainer, stay on the stratified sample. Every
    candidate's MLflow run says what it was trained on (tags ``train_rows``, ``train_data``, ``engine``).
    """
    cfg = settings.modeling
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = configure(settings)
    sample = sample_splits(splits, cfg.sample_rows, cfg.seed)
    if sample is not splits:
        progress(f"tuning + baselines on a stratified sample of {len(sample.y_train):,} train rows")
    search_params, tuning = _search_params(sample, settings, study_name, fixed_params, progress, trainer)
    tuning.update(sample_train_rows=len(sample.y_train), sample_val_rows=len(sample.y_val))
    engine = "local" if trainer is None else trainer.label
    sampled = {
        "train_rows": str(len(sample.y_train)),
        "train_data": "full train split"
        if sample is splits
        else f"stratified sample of {len(sample.y_train)} train rows (modeling.sample_rows)",
        "engine": "local" if trainer is None else f"{engine} (driver: no distributed trainer)",
    }
    run_tags = {"lightgbm": {"train_rows": str(len(splits.y_train)), "train_data": "full train split"}}

    min_rows = settings.compute.lightgbm_data_parallel_min_rows
    if trainer is None or len(splits.y_train) < min_rows:
        progress("fitting LightGBM on the full train split")
        lgbm = fit_tuned_lightgbm(search_params, splits, cfg)
        run_tags["lightgbm"]["engine"] = (
            "local"
            if trainer is None
            else f"{engine} (driver: {len(splits.y_train)} train rows < "
            f"compute.lightgbm_data_parallel_min_rows = {min_rows})"
        )
        if trainer is not None:  # the Dagster metadata's engine: the trials ran on the cluster
            tuning.update(engine=run_tags["lightgbm"]["engine"])
    else:
        progress(f"fitting LightGBM data-parallel on {trainer.workers} Dask workers ({engine})")
        lgbm, shard_rows = fit_lightgbm_distributed(trainer, search_params, splits, cfg)
        run_tags["lightgbm"]["engine"] = f"{engine}: lightgbm.dask on {trainer.workers} workers"
        tuning.update(engine=engine, workers=trainer.workers, train_rows_by_shard=shard_rows)
    if fixed_params is None:
        lgbm.val_auc_by_imbalance = dict(tuning["imbalance_auc"])
    fitted = [lgbm]
    if cfg.xgboost:
        xgb_params, tuning["xgboost"] = _xgboost_search_params(
            sample, settings, study_name, fixed_params is None, progress
        )
        progress("fitting XGBoost")
        xgboost = fit_xgboost(xgb_params, sample, cfg)  # like the baselines: on the sample (memory, time)
        xgboost.val_auc_by_imbalance = dict(tuning["xgboost"].get("imbalance_auc", {}))
        fitted.append(xgboost)
    names = tuple(cfg.baselines if baselines is None else baselines) + tuple(cfg.extra_candidates)
    for spec in baseline_specs(cfg.seed, names, cfg.n_jobs):
        progress(f"fitting baseline {spec.name}")
        fitted.append(fit_candidate(spec, sample, "compare", cfg.n_jobs))

    # Every candidate is compared on the same evaluation rows; the winner is scored in full below.
    rows = _EvalRows.of(splits, cfg.eval_rows, cfg.seed)
    if rows.val_index is not None or rows.test_index is not None:
        progress(
            f"comparing candidates on {len(rows.y_val):,} val and {len(rows.y_test):,} test rows (stratified)"
        )
    tuning.update(eval_val_rows=len(rows.y_val), eval_test_rows=len(rows.y_test))
    table: list[dict[str, Any]] = []
    candidate_plots: dict[str, str] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for c in fitted:
        with threadpool_limits(limits=cfg.n_jobs):
            scores[c.name] = {  # calibration scores are needed for the best model only
                **split_scores(c.model, rows.X_val, "val", with_response=False),
                **split_scores(c.model, rows.X_test, "test", with_response=False),
            }
        row, candidate_plots[c.name] = _log_candidate(
            c, rows, scores[c.name], splits.features, workdir, tracking, run_tags.get(c.name, sampled)
        )
        table.append(row)
        progress(f"logged MLflow run {row['run_id']} for {c.name}")
    members: dict[str, float] = {}
    ensemble = _ensemble(fitted, scores, rows, cfg) if cfg.ensemble_max_members >= 2 else None
    eligible = list(fitted)
    if ensemble is not None:
        c, scores[ENSEMBLE], blend = ensemble
        members = dict(zip(blend.names, blend.weights, strict=True))
        best_single = max(x.val_auc for x in fitted)
        selectable = blend.val_auc_oof >= best_single - OOF_TOLERANCE
        progress(
            f"ensemble {members} ({blend.rule} weights): val AUC {blend.val_auc:.4f}, "
            f"out-of-fold {blend.val_auc_oof:.4f}"
            + ("" if selectable else f" (> {OOF_TOLERANCE} below the best single candidate: not selectable)")
        )
        row, candidate_plots[c.name] = _log_candidate(
            c,
            rows,
            scores[c.name],
            splits.features,
            workdir,
            tracking,
            extra_metrics={"val_auc_oof": blend.val_auc_oof, "selectable": float(selectable)},
        )
        row.update(val_auc_oof=blend.val_auc_oof, selectable=selectable)
        table.append(row)
        fitted.append(c)
        if selectable:
            eligible.append(c)
    best = max(eligible, key=lambda c: c.val_auc)
    for row in table:
        row["chosen"] = row["model"] == best.name
    experiment_run_id = log_experiment_table(tracking, table)
    model_path = workdir / "best_model.joblib"
    joblib.dump(best.model, model_path)
    best_scores = _score_best(best, scores.pop(best.name), splits, rows, cfg, progress)
    del scores
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
        run_ids={r["model"]: r["run_id"] for r in table},
        tuning=tuning,
        plots=candidate_plots,
        scores_path=str(scores_path),
        lightgbm_params=search_params,
        val_aucs={c.name: c.val_auc for c in fitted},
        imbalance={c.name: c.imbalance for c in fitted},
        members=members if best.name == ENSEMBLE else {},
        selectable=[c.name for c in eligible],
        experiment_run_id=experiment_run_id,
    )


def run_retraining_candidates(
    splits: Splits,
    settings: Settings,
    data_hash: str,
    workdir: Path,
    *,
    baselines: Sequence[str] | None = None,
    progress: Progress = quiet,
    model_name: str | None = None,
    trainer: DistributedTrainer | None = None,
) -> CandidateStage:
    """The candidate step of a (re)training on the training set with hash ``data_hash`` — what the
    ``training/candidates`` asset runs (on the production model; ``model_name``: another registered
    model's champion).

    With ``settings.modeling.retune_on_retrain`` false (default) and a LightGBM champion, LightGBM is
    refitted with the champion's hyperparameters (registry tag ``lightgbm_params``; ``tuning`` then
    holds ``fixed_params``) — no study; otherwise (no champion yet, a non-LightGBM champion, or
    retuning asked for) the Optuna study ``<study_name>-<data_hash[:8]>`` runs.
    """
    cfg = settings.modeling
    fixed = (
        None if cfg.retune_on_retrain else ModelRegistry(settings, name=model_name).lightgbm_params(CHAMPION)
    )
    progress(
        "retraining with the champion's LightGBM parameters (no re-tuning)"
        if fixed is not None
        else "training with a (re)tuned LightGBM"
    )
    return run_candidates(
        splits,
        settings,
        workdir,
        study_name=f"{cfg.study_name}-{data_hash[:8]}",
        baselines=baselines,
        fixed_params=fixed,
        progress=progress,
        trainer=trainer,
    )
