"""The training categories of models that store them (XGBoost), and scoring frames aligned to them.

XGBoost (>= 3.1) records the categories of each categorical feature at training and refuses a frame
holding a category it never saw (a new signup cohort every production quarter). LightGBM maps an unseen
category to missing. :func:`align_categories` gives XGBoost the same behaviour: the frame's categorical
columns are recast to the model's training categories, so an unseen value becomes missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def _xgboost_estimators(model: Any, depth: int = 0) -> list[Any]:
    """Every XGBoost estimator inside ``model``: itself, inside a calibrated / frozen wrapper, or an
    ensemble member (any nesting of those)."""
    if model is None or depth > 6:
        return []
    if type(model).__module__.startswith("xgboost"):
        return [model]
    found: list[Any] = []
    for fold in getattr(model, "calibrated_classifiers_", None) or []:
        found += _xgboost_estimators(fold.estimator, depth + 1)
    for member in getattr(model, "members", None) or []:
        found += _xgboost_estimators(member, depth + 1)
    inner = getattr(model, "estimator", None)
    if inner is not None and not found:
        found += _xgboost_estimators(inner, depth + 1)
    return found


def training_categories(model: Any) -> dict[str, list[Any]]:
    """Feature -> training categories of the XGBoost estimators inside ``model`` ({} when none)."""
    lists: dict[str, list[Any]] = {}
    for estimator in _xgboost_estimators(model):
        try:
            stored = estimator.get_booster().get_categories(export_to_arrow=True).to_arrow()
        except (AttributeError, ValueError):  # no categorical feature, or a model saved without them
            continue
        for name, values in stored:
            if values is not None:
                lists.setdefault(str(name), values.to_pylist())
    return lists


def align_categories(categories: Mapping[str, list[Any]], X: pd.DataFrame) -> pd.DataFrame:
    """``X`` with each column named in ``categories`` recast to those categories (unseen -> missing);
    ``X`` itself when nothing needs recasting."""
    columns = {c: pd.CategoricalDtype(v) for c, v in categories.items() if c in X.columns}
    return X.astype(columns) if columns else X
