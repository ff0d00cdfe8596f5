"""Per-request scoring of an ENSEMBLE's members on numpy arrays (the served ensemble's hot path).

An ensemble request used to build a pandas frame and call every member's ``predict_proba``: for one row
that is milliseconds of pandas / scikit-learn validation per member, and XGBoost predicting on all cores
for every request of every worker thread (the service scores in a thread pool). Here one
:class:`RowBlock` is built per request and shared by the members:

* ``numeric``: a float matrix in feature order (NaN at the categorical columns and for missing values);
* ``values``: each categorical feature's values, ALIGNED to the ensemble's training categories (those
  XGBoost stored, ``modeling.categories``): a value XGBoost never saw is missing for every member, as in
  ``BlendEnsemble.member_proba``.

Each member is compiled once (:func:`compile_member`) into a scorer of that block:

* LightGBM (``LGBMClassifier``): the block with each categorical column replaced by LightGBM's training
  category codes (unknown -> missing) into ``Booster.predict``, one thread below ``SINGLE_THREAD_ROWS``;
* XGBoost (``XGBClassifier``): the same matrix with XGBoost's category codes into
  ``Booster.inplace_predict`` (no DMatrix), on a one-thread copy of the booster below
  ``SINGLE_THREAD_ROWS``, over the iteration range ``predict_proba`` uses;
* a scikit-learn ``Pipeline(ColumnTransformer, LogisticRegression)`` (the logistic and spline logistic
  baselines): the column transformer evaluated on arrays — numeric branch: the fitted imputer's
  statistics, ``StandardScaler`` as ``(x - mean) / scale``, any other fitted step (``SplineTransformer``)
  by its own ``transform`` on the array; categorical branch: the fitted most-frequent imputer and the
  one-hot encoder's categories (unknown -> all zeros) — then ``expit(x @ coef.T + intercept)``;
* anything else: ``predict_proba`` on a typed pandas frame, built at most once per request.

Each scorer returns the member's ``predict_proba[:, 1]`` with the dtype ``predict_proba`` has (XGBoost:
float32), so the blend (``BlendEnsemble.blend``) is computed exactly as offline (tested to 1e-9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

# Fewer rows than this are predicted on one thread: for a request's few rows, starting an OpenMP team
# costs more than the work (40 µs → 250-750 µs per one-row LightGBM predict on a busy 2-core box).
SINGLE_THREAD_ROWS = 256


class MemberInputError(ValueError):
    """A value the member scorers cannot use (a text value in a numeric feature)."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


@dataclass
class RowBlock:
    """One request's inputs, shared by every member (module docstring)."""

    rows: Sequence[Mapping[str, Any]] | pd.DataFrame
    numeric: np.ndarray
    values: dict[str, Any]  # a list (rows) or an object array (a frame), None = missing
    frame: pd.DataFrame | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.numeric)


def row_block(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    features: Sequence[str],
    categorical: set[str],
    categories: Mapping[str, list[Any]],
) -> RowBlock:
    """The :class:`RowBlock` of ``rows`` (dicts or a frame); ``categories``: feature -> the training
    categories a value must be among (else it is missing)."""
    allowed = {c: set(v) for c, v in categories.items()}
    n = len(rows)
    numeric = np.full((n, len(features)), np.nan, dtype=np.float64)
    values: dict[str, Any] = {}
    if isinstance(rows, pd.DataFrame):
        absent = [f for f in features if f not in rows.columns]
        if absent:
            raise MemberInputError(f"input misses feature column(s) {absent}")
        for j, name in enumerate(features):
            column = rows[name]
            if name in categorical:
                raw = column.astype(object).to_numpy()
                raw[pd.isna(raw)] = None
                if name in allowed:  # vectorised alignment (a batch): unseen -> missing
                    raw[~pd.Series(raw).isin(categories[name]).to_numpy()] = None
                values[name] = raw
            else:
                try:
                    numeric[:, j] = pd.to_numeric(column, errors="raise").to_numpy(
                        dtype=np.float64, na_value=np.nan
                    )
                except (TypeError, ValueError) as exc:
                    raise MemberInputError(f"non-numeric value in numeric feature {name}: {exc}") from exc
        return RowBlock(rows, numeric, values)
    for name in categorical:
        values[name] = [None] * n
    for i, row in enumerate(rows):
        for j, name in enumerate(features):
            value = row.get(name)
            if name in categorical:
                values[name][i] = None if _missing(value) else value
            elif value is not None:
                try:
                    numeric[i, j] = value
                except (TypeError, ValueError) as exc:
                    raise MemberInputError(f"non-numeric value {value!r} in numeric feature {name}") from exc
    for name, keep in allowed.items():
        if name in values:
            values[name] = [v if v in keep else None for v in values[name]]
    return RowBlock(rows, numeric, values)


def _positions(index: pd.Index, mapping: Mapping[Any, float], values: Sequence[Any]) -> np.ndarray:
    """Each value's position in a category list (NaN when absent): dict look-ups for a request's few
    rows, one vectorised ``get_indexer`` for a batch."""
    if len(values) < SINGLE_THREAD_ROWS:
        return np.fromiter((mapping.get(v, math.nan) for v in values), dtype=np.float64, count=len(values))
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    found = index.get_indexer(pd.Index(array, dtype=object, copy=False))
    return np.where(found >= 0, found, np.nan).astype(np.float64)


@dataclass(frozen=True)
class _Codes:
    """A member's category list per categorical feature, as a look-up dict and a pandas index."""

    mapping: dict[str, dict[Any, float]]
    index: dict[str, pd.Index]

    @classmethod
    def of(cls, lists: Mapping[str, Sequence[Any]]) -> _Codes:
        return cls(
            {c: {v: float(i) for i, v in enumerate(vals)} for c, vals in lists.items()},
            {c: pd.Index(list(vals), dtype=object) for c, vals in lists.items()},
        )


def _coded(block: RowBlock, features: Sequence[str], codes: _Codes) -> np.ndarray:
    """The block's numeric matrix with each categorical column as the member's category codes."""
    x = block.numeric.copy()
    for j, name in enumerate(features):
        mapping = codes.mapping.get(name)
        if mapping is not None:
            column = block.values.get(name, [None] * len(x))
            x[:, j] = _positions(codes.index[name], mapping, column)
    return x


Scorer = Callable[[RowBlock], np.ndarray]


def _lightgbm(model: Any, features: Sequence[str]) -> Scorer | None:
    booster = model.booster_
    if booster.feature_name() != list(features):
        return None
    infos = booster.dump_model(num_iteration=1)["feature_infos"]
    categorical = [f for f in features if infos.get(f, {}).get("values")]
    stored = booster.pandas_categorical or []
    if len(stored) != len(categorical):
        return None
    codes = _Codes.of(dict(zip(categorical, stored, strict=True)))

    def score(block: RowBlock) -> np.ndarray:
        x = _coded(block, features, codes)
        threads = 1 if len(x) < SINGLE_THREAD_ROWS else 0
        return np.asarray(booster.predict(x, num_threads=threads))

    return score


def _xgboost(model: Any, features: Sequence[str], categories: Mapping[str, list[Any]]) -> Scorer | None:
    booster = model.get_booster()
    if list(booster.feature_names or []) != list(features) or getattr(model, "objective", None) not in (
        "binary:logistic",
        None,
    ):
        return None
    types = booster.feature_types or []
    lists: dict[str, list[Any]] = {}
    for name, kind in zip(features, types, strict=False):
        if kind == "c":
            if name not in categories:
                return None  # a categorical feature without stored categories: the frame path
            lists[name] = list(categories[name])
    codes = _Codes.of(lists)
    single = booster.copy()
    single.set_param({"nthread": 1})
    try:  # predict_proba's iteration range: up to the best iteration when early stopping kept one
        iterations = (0, int(model.best_iteration) + 1)
    except AttributeError:
        iterations = (0, 0)

    def score(block: RowBlock) -> np.ndarray:
        x = _coded(block, features, codes)
        chosen = single if len(x) < SINGLE_THREAD_ROWS else booster
        return np.asarray(chosen.inplace_predict(x, iteration_range=iterations, validate_features=False))

    return score


def _numeric_branch(steps: Sequence[Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """A numeric ``Pipeline``'s steps as array code: median/mean/constant imputer first (its statistics),
    ``StandardScaler`` by hand, any step fitted on arrays by its own ``transform``."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if not steps or not isinstance(steps[0], SimpleImputer):
        return None
    imputer = steps[0]
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    if (
        imputer.strategy not in ("mean", "median", "constant")
        or imputer.add_indicator
        or np.isnan(fill).any()
        or not (isinstance(imputer.missing_values, float) and math.isnan(imputer.missing_values))
    ):
        return None
    rest: list[Callable[[np.ndarray], np.ndarray]] = []
    for step in steps[1:]:
        if isinstance(step, StandardScaler):
            mean = step.mean_ if step.with_mean else None
            scale = step.scale_ if step.with_std else None

            def scaled(x: np.ndarray, mean: Any = mean, scale: Any = scale) -> np.ndarray:
                if mean is not None:
                    x -= mean
                if scale is not None:
                    x /= scale
                return x

            rest.append(scaled)
        elif hasattr(step, "transform") and not hasattr(step, "feature_names_in_"):
            rest.append(step.transform)
        else:
            return None

    def run(x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), fill, x)
        for f in rest:
            x = np.asarray(f(x), dtype=np.float64)
        return x

    return run


def _categorical_branch(
    steps: Sequence[Any], columns: Sequence[str]
) -> Callable[[RowBlock], np.ndarray] | None:
    """A categorical ``Pipeline`` (most-frequent imputer, one-hot encoder ignoring unknowns) as array code."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    if len(steps) != 2 or not isinstance(steps[0], SimpleImputer) or not isinstance(steps[1], OneHotEncoder):
        return None
    imputer, encoder = steps
    if imputer.strategy not in ("most_frequent", "constant") or imputer.add_indicator:
        return None
    if (
        encoder.drop is not None
        or encoder.handle_unknown != "ignore"
        or getattr(encoder, "_infrequent_enabled", False)
        or len(encoder.categories_) != len(columns)
    ):
        return None
    fills = list(imputer.statistics_)
    encoders = _Codes.of({str(k): list(cats) for k, cats in enumerate(encoder.categories_)})
    widths = [len(c) for c in encoder.categories_]
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)

    def run(block: RowBlock) -> np.ndarray:
        out = np.zeros((len(block), int(sum(widths))), dtype=np.float64)
        for k, name in enumerate(columns):
            column = block.values[name]
            if len(block) < SINGLE_THREAD_ROWS:  # a request's few rows: plain look-ups
                mapping = encoders.mapping[str(k)]
                for i, v in enumerate(column):
                    code = mapping.get(fills[k] if v is None else v)
                    if code is not None:
                        out[i, offsets[k] + int(code)] = 1.0
                continue
            if isinstance(column, np.ndarray):
                filled: Any = column.copy()
                filled[pd.isna(filled)] = fills[k]
            else:
                filled = [fills[k] if v is None else v for v in column]
            position = _positions(encoders.index[str(k)], encoders.mapping[str(k)], filled)
            rows = np.flatnonzero(~np.isnan(position))
            out[rows, offsets[k] + position[rows].astype(int)] = 1.0
        return out

    return run


def _linear(model: Any, features: Sequence[str], categorical: set[str]) -> Scorer | None:
    """``Pipeline(ColumnTransformer(numeric, categorical branches), LogisticRegression)`` as array code."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        return None
    prep, final = model.steps[0][1], model.steps[1][1]
    if not isinstance(prep, ColumnTransformer) or not isinstance(final, LogisticRegression):
        return None
    if final.coef_.shape[0] != 1 or list(final.classes_) != [0, 1] or prep.sparse_output_:
        return None
    position = {f: j for j, f in enumerate(features)}
    parts: list[Callable[[RowBlock], np.ndarray]] = []
    for _, transformer, columns in prep.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if not isinstance(transformer, Pipeline) or any(c not in position for c in columns):
            return None
        steps = [s for _, s in transformer.steps]
        if all(c in categorical for c in columns):
            branch = _categorical_branch(steps, list(columns))
            if branch is None:
                return None
            parts.append(branch)
        elif not any(c in categorical for c in columns):
            numeric = _numeric_branch(steps)
            if numeric is None:
                return None
            idx = [position[c] for c in columns]

            def numeric_part(
                block: RowBlock, run: Callable[[np.ndarray], np.ndarray] = numeric, idx: list[int] = idx
            ) -> np.ndarray:
                return run(block.numeric[:, idx])

            parts.append(numeric_part)
        else:
            return None
    coef, intercept = final.coef_, final.intercept_

    def score(block: RowBlock) -> np.ndarray:
        x = np.hstack([part(block) for part in parts])
        return np.asarray(expit((x @ coef.T + intercept).ravel()))

    return score


def compile_member(
    model: Any, features: Sequence[str], categorical: set[str], categories: Mapping[str, list[Any]]
) -> tuple[str, Scorer | None]:
    """``(path, scorer)``: ``path`` one of ``lightgbm``, ``xgboost``, ``linear`` with the array scorer, or
    ``frame`` with None (score ``predict_proba`` on the typed frame)."""
    module = type(model).__module__
    if module.startswith("lightgbm") and hasattr(model, "booster_"):
        scorer = _lightgbm(model, features)
        if scorer is not None:
            return "lightgbm", scorer
    elif module.startswith("xgboost"):
        scorer = _xgboost(model, features, categories)
        if scorer is not None:
            return "xgboost", scorer
    else:
        scorer = _linear(model, features, categorical)
        if scorer is not None:
            return "linear", scorer
    return "frame", None


def compile_calibrator(calibrator: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The calibrator's ``predict``; scikit-learn's sigmoid calibrator as its own formula
    ``expit(-(a * s + b))`` on the array (its ``predict`` validates the input first: ~0.1 ms a request)."""
    from sklearn.calibration import _SigmoidCalibration

    if type(calibrator) is _SigmoidCalibration:
        a, b = calibrator.a_, calibrator.b_
        return lambda scores: np.asarray(expit(-(a * scores + b)))
    return lambda scores: np.asarray(calibrator.predict(scores))
