"""The candidate models: tuned LightGBM and XGBoost plus scikit-learn baselines (the blend of the best
candidates is ``ensemble.py``).

Every candidate is a scikit-learn compatible classifier with ``predict_proba``; baselines are a
``Pipeline`` whose last step is called ``model``. Class imbalance is handled the same way for every
baseline: the candidate is fitted twice, once unweighted and once with ``balanced`` sample weights
(``sklearn.utils.class_weight.compute_sample_weight``), and the variant with the higher validation AUC
is kept; the choice and both AUCs are recorded in :class:`FittedCandidate`. LightGBM makes the same
choice inside its Optuna search (``scale_pos_weight`` = 1 or negatives/positives, see ``tuning.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from churn_assets.modeling.splits import Splits

Flavor = Literal["sklearn", "lightgbm"]
Imbalance = Literal["none", "balanced"]
BASELINES: tuple[str, ...] = ("logistic_regression", "random_forest", "hist_gradient_boosting", "mlp")
# scikit-learn candidate families beyond the spec's baselines, fitted the same way (``extra_candidates``)
EXTRA_CANDIDATES: tuple[str, ...] = ("spline_logistic_regression",)


@dataclass(frozen=True)
class CandidateSpec:
    """How to build one (unfitted) candidate: its name, a factory, the params to log, the MLflow flavor."""

    name: str
    build: Callable[[], Any]
    params: dict[str, Any]
    flavor: Flavor = "sklearn"


@dataclass
class FittedCandidate:
    """A fitted candidate with its validation AUC, fit time and the imbalance choice made for it."""

    name: str
    model: Any
    params: dict[str, Any]
    flavor: Flavor
    val_auc: float
    train_seconds: float
    imbalance: Imbalance
    val_auc_by_imbalance: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class."""
        return np.asarray(self.model.predict_proba(X))[:, 1]


def one_hot_scaler() -> ColumnTransformer:
    """Numeric columns: median impute + standard scale; categorical/object columns: one-hot."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("num", numeric, make_column_selector(dtype_include=np.number)),
            ("cat", categorical, make_column_selector(dtype_include=["category", "object", "bool"])),
        ]
    )


def spline_one_hot_scaler(n_knots: int = 5) -> ColumnTransformer:
    """Numeric columns: median impute + cubic B-splines (knots at quantiles) + standard scale;
    categorical/object columns: one-hot. A logistic regression on it is an additive model (GAM) whose
    per-feature effects may bend."""
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            # include_bias=False: B-splines sum to 1, so the full basis is collinear with the intercept;
            # dropping one basis function per feature spans the same functions, better conditioned
            ("spline", SplineTransformer(n_knots=n_knots, degree=3, knots="quantile", include_bias=False)),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("num", numeric, make_column_selector(dtype_include=np.number)),
            ("cat", categorical, make_column_selector(dtype_include=["category", "object", "bool"])),
        ]
    )


def baseline_specs(
    seed: int = 42, names: tuple[str, ...] = BASELINES, n_jobs: int = 1
) -> list[CandidateSpec]:
    """The scikit-learn baselines (logistic regression scaled + one-hot, RF, HistGB, MLP (128, 64)) and the
    extra scikit-learn candidates (``spline_logistic_regression``: logistic regression on cubic splines
    of the numeric columns, one-hot categoricals)."""
    specs = {
        "spline_logistic_regression": CandidateSpec(
            "spline_logistic_regression",
            lambda: Pipeline(
                [
                    ("prep", spline_one_hot_scaler()),
                    # Newton steps on the Cholesky factor: a few iterations where lbfgs needed hundreds
                    # (n_samples >> n_features, the balanced variant especially; docs/modeling.md)
                    ("model", LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=300)),
                ]
            ),
            {
                "C": 1.0,
                "solver": "newton-cholesky",
                "encoding": "cubic splines (5 quantile knots, no bias column) + one-hot",
                "scaling": "standard",
            },
        ),
        "logistic_regression": CandidateSpec(
            "logistic_regression",
            lambda: Pipeline(
                [("prep", one_hot_scaler()), ("model", LogisticRegression(C=1.0, max_iter=2000))]
            ),
            {"C": 1.0, "encoding": "one-hot", "scaling": "standard"},
        ),
        "random_forest": CandidateSpec(
            "random_forest",
            lambda: Pipeline(
                [
                    ("prep", one_hot_scaler()),
                    (
                        "model",
                        RandomForestClassifier(
                            n_estimators=200, min_samples_leaf=5, n_jobs=n_jobs, random_state=seed
                        ),
                    ),
                ]
            ),
            {"n_estimators": 200, "min_samples_leaf": 5},
        ),
        "hist_gradient_boosting": CandidateSpec(
            "hist_gradient_boosting",
            lambda: Pipeline(
                [
                    (
                        "model",
                        HistGradientBoostingClassifier(
                            learning_rate=0.05,
                            max_iter=300,
                            categorical_features="from_dtype",
                            random_state=seed,
                        ),
                    )
                ]
            ),
            {"learning_rate": 0.05, "max_iter": 300, "early_stopping": "auto"},
        ),
        "mlp": CandidateSpec(
            "mlp",
            lambda: Pipeline(
                [
                    ("prep", one_hot_scaler()),
                    (
                        "model",
                        MLPClassifier(
                            hidden_layer_sizes=(128, 64),
                            alpha=1e-3,
                            early_stopping=True,
                            max_iter=300,
                            random_state=seed,
                        ),
                    ),
                ]
            ),
            {"hidden": "(128, 64)", "alpha": 1e-3, "early_stopping": True},
        ),
    }
    unknown = set(names) - set(specs)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {list(specs)}")
    return [specs[n] for n in names]


# LightGBM's quantized-gradient training (LightGBM >= 4.0): gradients and hessians are rounded to a few
# integer levels, so histograms are accumulated in integers; the leaf values are then refitted with the
# exact gradients (``quant_train_renew_leaf``), which keeps the model's accuracy.
QUANTIZED_GRADIENTS: dict[str, Any] = {"use_quantized_grad": True, "quant_train_renew_leaf": True}


def lightgbm_options(quantized: bool, n_rows: int = 0, min_rows: int = 0) -> dict[str, Any]:
    """Training options (not hyperparameters: never tuned, never logged as params) of a LightGBM fit on
    ``n_rows`` train rows: quantized gradients when ``quantized`` and ``n_rows >= min_rows``."""
    return dict(QUANTIZED_GRADIENTS) if quantized and n_rows >= min_rows else {}


def _param(params: Mapping[str, Any], names: tuple[str, ...], default: float) -> float:
    for name in names:
        if params.get(name) is not None:
            return float(params[name])
    return default


def quantization_safe(params: Mapping[str, Any]) -> bool:
    """Whether LightGBM's CPU quantized-gradient training is sound with these parameters.

    In LightGBM 4.x the quantized histograms are built as if every row were in the tree's data: row
    bagging (``subsample`` < 1 with ``subsample_freq`` > 0, or GOSS) and column sampling
    (``colsample_bytree`` / ``colsample_bynode`` < 1) make a fit abort on a failed split check or
    grow worse trees (lightgbm-org/LightGBM#5994). Such parameters get exact gradients."""
    fraction = min(
        _param(params, ("subsample", "bagging_fraction", "bagging", "sub_row"), 1.0),
        _param(params, ("pos_bagging_fraction", "pos_subsample", "pos_bagging"), 1.0),
        _param(params, ("neg_bagging_fraction", "neg_subsample", "neg_bagging"), 1.0),
    )
    bagged = fraction < 1.0 and _param(params, ("subsample_freq", "bagging_freq"), 0.0) > 0
    goss = (
        str(params.get("data_sample_strategy", "")) == "goss"
        or str(params.get("boosting_type", "")) == "goss"
    )
    columns = min(
        _param(params, ("colsample_bytree", "feature_fraction", "sub_feature"), 1.0),
        _param(params, ("colsample_bynode", "feature_fraction_bynode"), 1.0),
    )
    return not (bagged or goss or columns < 1.0)


def with_options(params: Mapping[str, Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` for a fit with ``params``, without the quantized-gradient ones when
    :func:`quantization_safe` says no."""
    if not options:
        return {}
    if quantization_safe(params):
        return dict(options)
    return {k: v for k, v in options.items() if k not in QUANTIZED_GRADIENTS}


def lightgbm_spec(
    params: dict[str, Any], seed: int = 42, n_jobs: int = 1, options: dict[str, Any] | None = None
) -> CandidateSpec:
    """A LightGBM candidate with fixed (e.g. tuned) parameters; ``n_estimators`` is the best iteration.
    ``options`` (:func:`lightgbm_options`, less what :func:`with_options` drops for these params) are
    passed to LightGBM but not recorded as the candidate's params."""
    full = {
        "objective": "binary",
        "verbose": -1,
        "random_state": seed,
        "n_jobs": n_jobs,
        **with_options(params, options),
        **params,
    }
    return CandidateSpec("lightgbm", lambda: lgb.LGBMClassifier(**full), dict(params), flavor="lightgbm")


# XGBoost with fixed parameters when no study runs (a retraining that keeps the champion's LightGBM
# parameters): the spec's run 001 (lr 0.1, depth 6), with a round count fit for small learning rates.
DEFAULT_XGBOOST_PARAMS: dict[str, Any] = {"learning_rate": 0.1, "max_depth": 6, "n_estimators": 200}


def xgboost_spec(params: dict[str, Any], seed: int = 42, n_jobs: int = 1) -> CandidateSpec:
    """An XGBoost candidate (``XGBClassifier``, histogram trees, pandas categoricals used natively —
    XGBoost >= 3.1 stores the training categories and re-codes a frame's categories by value at
    prediction) with fixed (e.g. tuned) parameters; ``n_estimators`` is the best iteration. Logged with
    the scikit-learn flavor (skops)."""
    full = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "enable_categorical": True,
        "random_state": seed,
        "n_jobs": n_jobs,
        **params,
    }
    return CandidateSpec("xgboost", lambda: xgb.XGBClassifier(**full), dict(params))


@dataclass(frozen=True)
class Prepared:
    """A baseline pipeline's preprocessing (every step but ``model``), fitted once on the train split,
    with the train and val matrices it produced: the imbalance variants of one candidate differ only in
    the final estimator's sample weights, and the preprocessing steps (imputers, splines, scalers,
    one-hot) never see the labels or the weights."""

    steps: list[tuple[str, Any]]
    X_train: Any
    X_val: Any
    seconds: float


def prepare(spec: CandidateSpec, splits: Splits, n_jobs: int = 1) -> Prepared | None:
    """Fit ``spec``'s preprocessing once (None when the candidate is not a pipeline with preprocessing)."""
    model = spec.build()
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    prep = Pipeline(model.steps[:-1])
    start = time.perf_counter()
    with threadpool_limits(limits=n_jobs):
        X_train = prep.fit_transform(splits.X_train)
        seconds = time.perf_counter() - start
        X_val = prep.transform(splits.X_val)
    return Prepared(prep.steps, X_train, X_val, seconds)


def fit_spec(
    spec: CandidateSpec,
    splits: Splits,
    imbalance: Imbalance,
    n_jobs: int = 1,
    prepared: Prepared | None = None,
) -> tuple[Any, float, float]:
    """Fit one spec on the train split (OpenMP/BLAS threads capped at ``n_jobs``); returns
    ``(model, validation AUC, seconds)``. With ``prepared`` (:func:`prepare`) only the final estimator
    is fitted, on the prepared matrix, and the pipeline is assembled from the fitted steps; the
    seconds then include the preprocessing's."""
    model = spec.build()
    weight = compute_sample_weight("balanced", splits.y_train) if imbalance == "balanced" else None
    start = time.perf_counter()
    with threadpool_limits(limits=n_jobs):
        if prepared is not None:
            name, estimator = model.steps[-1]
            estimator.fit(prepared.X_train, splits.y_train, sample_weight=weight)
            model = Pipeline([*prepared.steps, (name, estimator)])
            seconds = time.perf_counter() - start + prepared.seconds
            p_val = np.asarray(estimator.predict_proba(prepared.X_val))[:, 1]
        else:
            if isinstance(model, Pipeline):
                model.fit(splits.X_train, splits.y_train, model__sample_weight=weight)
            else:
                model.fit(splits.X_train, splits.y_train, sample_weight=weight)
            seconds = time.perf_counter() - start
            p_val = np.asarray(model.predict_proba(splits.X_val))[:, 1]
    auc = float(roc_auc_score(splits.y_val, p_val))
    return model, auc, seconds


def fit_candidate(
    spec: CandidateSpec,
    splits: Splits,
    imbalance: Imbalance | Literal["compare"] = "compare",
    n_jobs: int = 1,
) -> FittedCandidate:
    """Fit a candidate; with ``imbalance="compare"`` fit unweighted and balanced (a pipeline's
    preprocessing fitted once for both, :func:`prepare`), keep the better on val.

    A tie keeps the unweighted model (simpler, better calibrated).
    """
    choices: list[Imbalance] = ["none", "balanced"] if imbalance == "compare" else [imbalance]
    prepared = prepare(spec, splits, n_jobs) if len(choices) > 1 else None
    results = {choice: fit_spec(spec, splits, choice, n_jobs, prepared) for choice in choices}
    best: Imbalance = max(choices, key=lambda c: (results[c][1], c == "none"))
    model, auc, seconds = results[best]
    return FittedCandidate(
        name=spec.name,
        model=model,
        params={**spec.params, "imbalance": best},
        flavor=spec.flavor,
        val_auc=auc,
        train_seconds=seconds,
        imbalance=best,
        val_auc_by_imbalance={c: r[1] for c, r in results.items()},
    )
