"""Pure scoring of registered model versions (no BentoML, no HTTP): used by the service and batch scoring.

:func:`load_version` / :func:`load_alias` read an MLflow registry version with its tags ``features`` (the
input columns, in order), ``metric.threshold`` (the validation-chosen decision threshold), ``flavor`` and
``semver``. :meth:`ScoringModel.score` scores a batch of feature rows -> probability, label at the
threshold and, when asked, the top-k SHAP reasons.

Two paths, identical results (tested):

* LightGBM flavor: a float matrix built straight from the rows (string features mapped to the category
  codes LightGBM stored at training, unknown categories -> missing) into ``Booster.predict`` — no pandas
  on the hot path. SHAP: ``Booster.predict(pred_contrib=True)`` (TreeSHAP inside LightGBM, log-odds).
* any other model (calibrated wrappers, scikit-learn baselines, XGBoost): a pandas frame with the training
  dtypes (string features as ``category``) into ``predict_proba``. SHAP reasons when a LightGBM model sits
  inside (contributions of the uncalibrated booster) or the model is XGBoost (``pred_contribs``), else none.
* an ENSEMBLE (``modeling.ensemble.BlendEnsemble``, calibrated or not): served as it was built — every
  member is a :class:`ScoringModel` of its own (the LightGBM member on the fast path) and scored in turn,
  their probabilities blended with the ensemble's weights, then the calibrator applied. Each member's
  scoring time is returned (:attr:`Scored.member_seconds`; the service exports it as
  ``churn_member_seconds``). Reasons: the weighted average of the SHAP contributions (log-odds) of the
  members that have them (LightGBM, XGBoost), weights renormalised over those members.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from churn_assets.feature_store.definitions import all_features
from churn_assets.modeling.categories import training_categories
from churn_assets.serving.members import (
    SINGLE_THREAD_ROWS,
    MemberInputError,
    compile_calibrator,
    compile_member,
    row_block,
)
from churn_assets.settings import Settings

_STRING_FEATURES = {f.name for f in all_features() if f.dtype == "string"}


def _threads(rows: int) -> int:
    """``num_threads`` of a LightGBM predict of ``rows`` rows (0 = OpenMP's default, all cores)."""
    return 1 if rows < SINGLE_THREAD_ROWS else 0


class SingleRowPredictor:
    """One-row probabilities of a LightGBM booster through LightGBM's C API for single rows
    (``LGBM_BoosterPredictForMatSingleRowFast``: the prediction configuration parsed once, at creation).

    ``Booster.predict`` builds a predictor and converts its input on every call — several times the cost of
    a one-row prediction itself; this calls LightGBM once per row, with the same model, iterations
    (the booster's ``best_iteration``, as ``Booster.predict`` uses), transform (probability) and one
    thread, so the same result (tested). Calls are serialised by a lock (one configuration per booster).
    """

    def __init__(self, booster: Any, n_features: int) -> None:
        import ctypes

        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._n_features = n_features
        self._booster = booster  # keeps the booster (its handle) alive as long as this predictor
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: probabilities
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(booster.best_iteration),
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._finalizer = weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle)
        self._out = np.empty(1, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._row = np.empty(n_features, dtype=np.float64)  # the input, copied in under the lock
        self._row_ptr = self._row.ctypes.data_as(ctypes.c_void_p)
        self._out_len_ref = ctypes.byref(self._out_len)
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:  # a copy or pickle configures its own
        return (SingleRowPredictor, (self._booster, self._n_features))

    def predict(self, row: np.ndarray) -> float:
        """The probability of one row (a vector of the booster's features, in order)."""
        if row.shape != (self._n_features,):
            raise ScoringError(f"single-row predict needs a vector of {self._n_features} features")
        with self._lock:
            self._row[:] = row
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle, self._row_ptr, self._out_len_ref, self._out_ptr
                )
            )
            return float(self._out[0])


class ScoringError(ValueError):
    """The model or its input is unusable (names the field / tag and the rule)."""


def _ensemble_parts(model: Any) -> tuple[Any, Any | None] | None:
    """``(BlendEnsemble, calibrator or None)`` when ``model`` is an ensemble, bare or inside a
    ``CalibratedClassifierCV(FrozenEstimator(...))``; else None."""
    from churn_assets.modeling.ensemble import BlendEnsemble

    if isinstance(model, BlendEnsemble):
        return model, None
    calibrated = getattr(model, "calibrated_classifiers_", None)
    if calibrated:
        inner = getattr(calibrated[0].estimator, "estimator", calibrated[0].estimator)
        if isinstance(inner, BlendEnsemble):
            return inner, calibrated[0].calibrators[0]
    return None


def _xgboost_contributions(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """SHAP contributions (log-odds, bias column dropped) of an ``XGBClassifier`` on ``frame``."""
    import xgboost as xgb

    matrix = xgb.DMatrix(frame, enable_categorical=True)
    return np.asarray(model.get_booster().predict(matrix, pred_contribs=True))[:, :-1]


def _is_xgboost(model: Any) -> bool:
    return type(model).__module__.startswith("xgboost")


def _inner_lightgbm(model: Any) -> Any | None:
    """The fitted LightGBM estimator inside ``model`` (itself, a FrozenEstimator, a calibrated wrapper)."""
    try:
        import lightgbm as lgb
    except ImportError:  # pragma: no cover
        return None
    seen = 0
    while model is not None and seen < 5:
        seen += 1
        if isinstance(model, lgb.LGBMModel):
            return model
        if hasattr(model, "calibrated_classifiers_"):
            model = model.calibrated_classifiers_[0].estimator
        elif hasattr(model, "estimator"):
            model = model.estimator
        else:
            return None
    return None


@dataclass
class Scored:
    """Scores of a batch: probability, label (1 = churn at the threshold), optional reasons per row."""

    scores: np.ndarray
    labels: np.ndarray
    reasons: list[list[dict[str, Any]]] | None = None
    member_seconds: dict[str, float] | None = None  # an ensemble's scoring time per member


@dataclass
class ScoringModel:
    """A loaded model version: the estimator, its ordered feature list and decision threshold."""

    name: str
    version: str
    model: Any
    features: list[str]
    threshold: float
    flavor: str = "lightgbm"
    semver: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            raise ScoringError(f"model {self.name} v{self.version}: tag 'features' is empty")
        if not 0.0 <= self.threshold <= 1.0:
            raise ScoringError(f"model {self.name} v{self.version}: threshold {self.threshold} not in [0, 1]")
        self._lgbm = _inner_lightgbm(self.model)
        self._booster = self._lgbm.booster_ if self._lgbm is not None else None
        self._codes: dict[str, dict[Any, float]] = {}
        self.categorical = [f for f in self.features if f in _STRING_FEATURES]
        if self._booster is not None:
            names = self._booster.feature_name()
            if names != self.features:
                raise ScoringError(
                    f"model {self.name} v{self.version}: booster features {names[:3]}... differ from tag 'features'"
                )
            infos = self._booster.dump_model(num_iteration=1)["feature_infos"]
            self.categorical = [f for f in names if infos.get(f, {}).get("values")]
            cats = self._booster.pandas_categorical or []
            if len(cats) != len(self.categorical):
                raise ScoringError(
                    f"model {self.name} v{self.version}: {len(self.categorical)} categorical features but "
                    f"{len(cats)} stored category lists"
                )
            for col, values in zip(self.categorical, cats, strict=True):
                self._codes[col] = {v: float(i) for i, v in enumerate(values)}
        self._fast = self._booster is not None and self._lgbm is self.model
        self._single: SingleRowPredictor | None = None  # built on the first one-row score
        self._xgboost = _is_xgboost(self.model)
        self._category_lists = training_categories(self.model)  # XGBoost's, alone or in an ensemble
        self.members: list[tuple[str, float, ScoringModel]] = []
        self._calibrator: Any | None = None
        self._blend: Any | None = None
        self._calibrate: Callable[[np.ndarray], np.ndarray] | None = None
        self._member_paths: list[tuple[str, Any]] = []
        parts = _ensemble_parts(self.model)
        if parts is not None:
            ensemble, self._calibrator = parts
            self._booster, self._fast = None, False
            self.members = [
                (name, weight, ScoringModel(f"{self.name}/{name}", self.version, member, self.features, 0.5))
                for name, member, weight in zip(
                    ensemble.names, ensemble.members, ensemble.weights, strict=True
                )
            ]
            self.categorical = sorted({c for _, _, m in self.members for c in m.categorical})
            self._blend = ensemble
            self._calibrate = compile_calibrator(self._calibrator) if self._calibrator is not None else None
            shared = set(self.categorical) | set(self._category_lists)
            self._member_paths = [
                compile_member(m.model, self.features, shared, self._category_lists)
                for _, _, m in self.members
            ]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its defining fields: the derived state (an ensemble's compiled member scorers and
        calibrator, which are closures, the single-row predictor) is rebuilt where it is unpickled, e.g. on
        a Dask worker scoring a shard (compute/scoring.py)."""
        return (ScoringModel, tuple(getattr(self, f.name) for f in fields(self) if f.init))

    @property
    def member_paths(self) -> dict[str, str]:
        """An ensemble's member -> how it is scored per request (``lightgbm``, ``xgboost``, ``linear``:
        on arrays; ``frame``: ``predict_proba`` on a pandas frame); {} for a single model."""
        return {name: path for (name, _, _), (path, _) in zip(self.members, self._member_paths, strict=True)}

    @property
    def explainable(self) -> bool:
        if self.members:
            return any(m.explainable for _, _, m in self.members)
        return self._booster is not None or self._xgboost

    # -- inputs -----------------------------------------------------------------------------------
    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows -> float matrix in feature order (string features -> training category codes)."""
        out = np.empty((len(rows), len(self.features)), dtype=np.float64)
        codes = [self._codes.get(name) for name in self.features]
        columns = list(zip(self.features, codes, strict=True))
        nan = math.nan
        for i, row in enumerate(rows):
            get = row.get
            values = [get(name) if code is None else code.get(get(name), nan) for name, code in columns]
            out[i] = [nan if v is None else v for v in values]
        return out

    def matrix_from_frame(self, df: pd.DataFrame) -> np.ndarray:
        """A pandas frame -> the same float matrix as :meth:`matrix`, column by column (batch path)."""
        missing = [f for f in self.features if f not in df.columns]
        if missing:
            raise ScoringError(f"input misses feature column(s) {missing}")
        out = np.empty((len(df), len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = df[name]
            if name in self._codes:
                out[:, j] = column.astype(object).map(self._codes[name]).astype("float64").to_numpy()
            else:
                out[:, j] = pd.to_numeric(column, errors="raise").astype("float64").to_numpy(na_value=np.nan)
        return out

    def frame(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """Rows -> pandas frame with the training dtypes (string features as ``category``)."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        missing = [f for f in self.features if f not in df.columns]
        if missing:
            raise ScoringError(f"input misses feature column(s) {missing}")
        df = df[self.features]
        dtypes: dict[str, Any] = {}
        for col in self.features:
            if col in self._category_lists:  # the model's own category list: an unseen value is missing
                dtypes[col] = pd.CategoricalDtype(self._category_lists[col])
                continue
            # A column of text is categorical; one that holds only nulls (one request's missing number) is
            # numeric: as a category it would give the model a categorical column training never had.
            if col in self.categorical or (df[col].dtype == object and df[col].notna().any()):
                if not isinstance(df[col].dtype, pd.CategoricalDtype):
                    dtypes[col] = "category"
            elif df[col].dtype != np.float64:
                dtypes[col] = "float64"
        try:  # one conversion for every column (a text value in a numeric feature raises)
            return df.astype(dtypes) if dtypes else df.copy()
        except (TypeError, ValueError) as exc:
            raise ScoringError(f"input has a non-numeric value in a numeric feature: {exc}") from exc

    # -- scoring ----------------------------------------------------------------------------------
    def score(
        self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame, explain: bool = False, top_k: int = 3
    ) -> Scored:
        """Probability, label and (``explain``) the top-``top_k`` SHAP reasons of every row.

        ``rows``: dicts (the service) or a pandas frame (batch scoring: built column-wise).
        """
        if len(rows) == 0:
            return Scored(np.empty(0), np.empty(0, dtype=np.int8), [] if explain else None)
        if self.members:
            return self._score_ensemble(rows, explain, top_k)
        is_frame = isinstance(rows, pd.DataFrame)
        x: np.ndarray | None = None
        if self._fast:
            x = self.matrix_from_frame(rows) if isinstance(rows, pd.DataFrame) else self.matrix(rows)
            booster: Any = self._booster
            if len(x) == 1:
                if self._single is None:
                    self._single = SingleRowPredictor(booster, len(self.features))
                scores = np.array([self._single.predict(x[0])])
            else:
                scores = np.asarray(booster.predict(x, num_threads=_threads(len(x))), dtype=np.float64)
        else:
            scores = np.asarray(self.model.predict_proba(self.frame(rows)))[:, 1].astype(np.float64)
        labels = (scores >= self.threshold).astype(np.int8)
        reasons: list[list[dict[str, Any]]] | None = None
        if explain:
            if not self.explainable:
                reasons = [[] for _ in range(len(rows))]
            elif self._xgboost:
                reasons = self.top_reasons(_xgboost_contributions(self.model, self.frame(rows)), top_k)
            else:
                if x is None:
                    x = self.matrix_from_frame(rows) if is_frame else self.matrix(rows)  # type: ignore[arg-type]
                reasons = self.reasons(x, top_k)
        return Scored(scores, labels, reasons)

    def contributions(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> np.ndarray | None:
        """SHAP contributions (log-odds; rows x features) of a LightGBM or XGBoost model, else None."""
        if self._booster is not None:
            x = self.matrix_from_frame(rows) if isinstance(rows, pd.DataFrame) else self.matrix(rows)
            return np.asarray(self._booster.predict(x, pred_contrib=True))[:, :-1]
        if self._xgboost:
            return _xgboost_contributions(self.model, self.frame(rows))
        return None

    def _score_ensemble(
        self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame, explain: bool, top_k: int
    ) -> Scored:
        """Score every member in turn (timed) on one shared :class:`~churn_assets.serving.members.RowBlock`
        (its build time counted in the first member's), blend exactly as ``BlendEnsemble.blend``,
        calibrate, threshold; reasons from the members' contributions (module docstring)."""
        member_scores: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        contrib: np.ndarray | None = None
        explained_weight = 0.0
        start = time.perf_counter()
        try:
            block = row_block(
                rows, self.features, set(self.categorical) | set(self._category_lists), self._category_lists
            )
        except MemberInputError as exc:
            raise ScoringError(f"input: {exc}") from exc
        for (name, weight, member), (_, scorer) in zip(self.members, self._member_paths, strict=True):
            if scorer is not None:
                member_scores[name] = scorer(block)
            else:  # one typed frame for every member on the pandas path (built once)
                block.frame = self.frame(rows) if block.frame is None else block.frame
                member_scores[name] = np.asarray(member.model.predict_proba(block.frame))[:, 1]
            if explain:
                c = member.contributions(self.frame(rows) if member._xgboost else rows)
                if c is not None:
                    contrib = weight * c if contrib is None else contrib + weight * c
                    explained_weight += weight
            now = time.perf_counter()
            seconds[name] = now - start
            start = now
        blend: Any = self._blend
        scores = np.clip(blend.blend(member_scores), 0.0, 1.0)
        if self._calibrate is not None:
            scores = np.clip(np.asarray(self._calibrate(scores), dtype=np.float64), 0.0, 1.0)
        scores = np.asarray(scores, dtype=np.float64)
        labels = (scores >= self.threshold).astype(np.int8)
        reasons: list[list[dict[str, Any]]] | None = None
        if explain:
            reasons = (
                self.top_reasons(contrib / explained_weight, top_k)
                if contrib is not None
                else [[] for _ in range(len(rows))]
            )
        return Scored(scores, labels, reasons, seconds)

    def reasons(self, x: np.ndarray, top_k: int = 3) -> list[list[dict[str, Any]]]:
        """Top-``top_k`` features by |SHAP contribution| (log-odds of the LightGBM booster) per row."""
        booster: Any = self._booster
        contrib = np.asarray(booster.predict(x, pred_contrib=True, num_threads=_threads(len(x))))[:, :-1]
        return self.top_reasons(contrib, top_k)

    def top_reasons(self, contrib: np.ndarray, top_k: int) -> list[list[dict[str, Any]]]:
        """Top-``top_k`` features by |contribution| per row of a rows x features contribution matrix."""
        out = []
        for row in contrib:
            top = np.argsort(-np.abs(row))[:top_k]
            out.append([{"feature": self.features[j], "contribution": round(float(row[j]), 6)} for j in top])
        return out


def feature_hash(row: Mapping[str, Any], features: Sequence[str]) -> str:
    """A short stable hash of a row's feature values (the prediction log's feature snapshot)."""
    payload = json.dumps([row.get(f) for f in features], default=str, separators=(",", ":"))
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


def log_rows(
    model: ScoringModel,
    features: pd.DataFrame,
    ids: np.ndarray,
    *,
    variant: str,
    as_of: dt.date,
    source: str = "batch",
) -> pl.DataFrame:
    """Score ``features`` (one row per id) with ``model`` into prediction-log rows (batch scoring).

    ``ts`` is the as-of midnight (UTC, simulated time), ``latency_ms`` the batch's scoring time per row,
    ``feature_hash`` the same hash the service logs (:func:`feature_hash`).
    """
    started = time.perf_counter()
    scored = model.score(features)
    per_row_ms = (time.perf_counter() - started) * 1000 / max(len(ids), 1)
    records = [{str(k): v for k, v in r.items()} for r in features[model.features].to_dict("records")]
    ts = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    n = len(ids)
    return pl.DataFrame(
        {
            "ts": [ts] * n,
            "request_id": [f"{source}-{as_of.isoformat()}-{uuid.uuid4().hex[:12]}" for _ in range(n)],
            "customer_id": np.asarray(ids).astype(np.int64),
            "model_name": [model.name] * n,
            "model_version": [str(model.version)] * n,
            "variant": [variant] * n,
            "score": scored.scores.astype(np.float64),
            "label": scored.labels.astype(np.int8),
            "threshold": [float(model.threshold)] * n,
            "latency_ms": [per_row_ms] * n,
            "feature_hash": [feature_hash(r, model.features) for r in records],
            "source": [source] * n,
            "as_of": [as_of] * n,
        }
    )


def from_version(settings: Settings, mv: Any) -> ScoringModel:
    """A :class:`ScoringModel` from an MLflow ``ModelVersion`` (loads its artifact)."""
    from churn_assets.modeling.tracking import load_model

    tags = dict(mv.tags)
    if "features" not in tags:
        raise ScoringError(f"model version {mv.version}: registry tag 'features' is missing")
    if "metric.threshold" not in tags:
        raise ScoringError(f"model version {mv.version}: registry tag 'metric.threshold' is missing")
    model = load_model(str(mv.source), tags.get("flavor", "sklearn"))
    return ScoringModel(
        name=str(mv.name),
        version=str(mv.version),
        model=model,
        features=list(json.loads(tags["features"])),
        threshold=float(tags["metric.threshold"]),
        flavor=tags.get("flavor", "sklearn"),
        semver=tags.get("semver"),
        tags=tags,
    )


def load_version(settings: Settings, version: str) -> ScoringModel:
    """Load registered version ``version`` of ``settings.modeling.registered_model_name``."""
    from churn_assets.modeling.registry import ModelRegistry

    registry = ModelRegistry(settings)
    return from_version(settings, registry.client.get_model_version(registry.name, str(version)))


def load_alias(settings: Settings, alias: str = "champion") -> ScoringModel:
    """Load the version behind a registry alias (``champion`` by default)."""
    from churn_assets.modeling.registry import ModelRegistry

    registry = ModelRegistry(settings)
    mv = registry.version_by_alias(alias)
    if mv is None:
        raise ScoringError(
            f"registry has no '{alias}' version of {registry.name}: run `churnops train` first"
        )
    return from_version(settings, mv)
