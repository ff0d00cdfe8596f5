"""Train / validation / test assignment and validation of a training set.

The library is indifferent to where a feature matrix comes from: callers hand over ``X`` (one row per
example), labels ``y`` (0/1) and a split *assignment* — a Series of ``"train" | "val" | "test"``
aligned with ``X``. Two helpers produce an assignment: :func:`assign_by_period` (time-based, the
default when a period column exists) and :func:`assign_stratified` (random, stratified on the label).
:func:`build_splits` checks the inputs and fails with a :class:`TrainingDataError` naming the cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from churn_assets.modeling.names import SPLITS as SPLITS  # re-exported
from churn_assets.modeling.names import SplitName as SplitName


class TrainingDataError(ValueError):
    """The training inputs are unusable; the message names the cause."""


@dataclass(frozen=True)
class Splits:
    """Feature matrices and 0/1 labels of the three splits, plus the feature list they share."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_val: pd.DataFrame
    y_val: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    features: list[str]
    kind: Literal["time", "stratified", "given"] = "given"
    test_context: pd.DataFrame | None = None  # extra test-row columns (segments, tenure, revenue)

    def part(self, name: SplitName) -> tuple[pd.DataFrame, pd.Series]:
        """``(X, y)`` of one split."""
        return {
            "train": (self.X_train, self.y_train),
            "val": (self.X_val, self.y_val),
            "test": (self.X_test, self.y_test),
        }[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.part(name)[1]) for name in SPLITS}

    def positive_rates(self) -> dict[str, float]:
        return {name: float(self.part(name)[1].mean()) for name in SPLITS}


def assign_by_period(
    periods: pd.Series,
    train: tuple[int, int] = (1, 12),
    val: tuple[int, int] = (13, 15),
    test: tuple[int, int] = (16, 18),
) -> pd.Series:
    """Time-based assignment from an integer period column (e.g. snapshot month 1..18).

    Each range is inclusive. Rows outside every range get ``pd.NA`` and are dropped by
    :func:`build_splits`. Overlapping or out-of-order ranges are rejected (that would leak the future).
    """
    if not (train[0] <= train[1] < val[0] <= val[1] < test[0] <= test[1]):
        raise TrainingDataError(
            f"period boundaries must be ordered and disjoint: train {train}, val {val}, test {test}"
        )
    p = pd.to_numeric(periods, errors="coerce")
    out = pd.Series(pd.NA, index=periods.index, dtype="string")
    for name, (lo, hi) in zip(SPLITS, (train, val, test), strict=True):
        out[(p >= lo) & (p <= hi)] = name
    return out


def assign_by_time_share(times: pd.Series, val_share: float = 0.15, test_share: float = 0.15) -> pd.Series:
    """Time-based assignment of a table with its own time axis: the oldest ~``1-val-test`` of the rows
    train, then val, then the newest ~``test_share`` test. Rows with the same time value always land
    in the same split (no period is cut in two); unparseable times are rejected."""
    numeric = pd.to_numeric(times, errors="coerce")
    t = numeric if numeric.notna().sum() == times.notna().sum() else pd.to_datetime(times, errors="coerce")
    if t.isna().any():
        raise TrainingDataError(
            f"time column {times.name!r}: {int(t.isna().sum())} missing/unparseable value(s)"
        )
    counts = t.value_counts().sort_index()
    cumulative = counts.cumsum() / counts.sum()
    before = cumulative - counts / counts.sum()  # share of rows strictly older than each time value
    labels = np.where(
        before < 1 - val_share - test_share, "train", np.where(before < 1 - test_share, "val", "test")
    )
    mapping = pd.Series(labels, index=counts.index)
    return pd.Series(t.map(mapping).to_numpy(), index=times.index, dtype="string")


def assign_stratified(
    y: pd.Series, val_share: float = 0.15, test_share: float = 0.15, seed: int = 42
) -> pd.Series:
    """Random assignment stratified on the label (used when there is no time column)."""
    from sklearn.model_selection import train_test_split  # scikit-learn only where it is used

    _check_labels(y, where="labels")
    idx = np.arange(len(y))
    rest, test_idx = train_test_split(idx, test_size=test_share, stratify=y.to_numpy(), random_state=seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=val_share / (1 - test_share), stratify=y.to_numpy()[rest], random_state=seed
    )
    out = np.empty(len(y), dtype=object)
    out[train_idx], out[val_idx], out[test_idx] = "train", "val", "test"
    return pd.Series(out, index=y.index, dtype="string")


def build_splits(
    X: pd.DataFrame,
    y: pd.Series,
    assignment: pd.Series,
    features: Sequence[str] | None = None,
    kind: Literal["time", "stratified", "given"] = "given",
    context: pd.DataFrame | None = None,
) -> Splits:
    """Validate the inputs and cut them into :class:`Splits`.

    Fails (``TrainingDataError``) when: a requested feature column is missing, labels are NaN/inf or
    not 0/1, ``X``/``y``/``assignment`` are misaligned, a split is empty, or a split (train or val)
    holds a single class. ``context`` (optional, aligned with ``X``) holds non-feature columns used to
    evaluate the test split (fairness segments, stress slices); its test rows are kept.
    """
    feats = list(features) if features is not None else list(X.columns)
    missing = [f for f in feats if f not in X.columns]
    if missing:
        raise TrainingDataError(f"missing feature column(s): {missing}; the table has {list(X.columns)}")
    if not (len(X) == len(y) == len(assignment)):
        raise TrainingDataError(
            f"X, y and the split assignment must have the same length (got {len(X)}, {len(y)}, {len(assignment)})"
        )
    _check_labels(y, where="labels")
    bad = set(assignment.dropna().unique()) - set(SPLITS)
    if bad:
        raise TrainingDataError(f"split assignment has unknown values {sorted(bad)}; use {list(SPLITS)}")
    a = assignment.astype("string").fillna("").to_numpy(dtype=object)
    parts: dict[SplitName, tuple[pd.DataFrame, pd.Series]] = {}
    for name in SPLITS:
        mask = a == name
        parts[name] = (X.loc[mask, feats].reset_index(drop=True), y[mask].reset_index(drop=True))
    return splits_from_parts(
        parts,
        feats,
        kind=kind,
        context=None if context is None else context.loc[a == "test"].reset_index(drop=True),
    )


def splits_from_parts(
    parts: Mapping[SplitName, tuple[pd.DataFrame, pd.Series]],
    features: Sequence[str],
    kind: Literal["time", "stratified", "given"] = "given",
    context: pd.DataFrame | None = None,
) -> Splits:
    """:class:`Splits` from ``(X, y)`` per split that are already cut (e.g. read split by split), with the
    same checks as :func:`build_splits`: every feature present (a part whose ``X`` has NO columns is a
    labels-only part and passes), 0/1 labels, no empty split, both classes in train and val."""
    feats = list(features)
    out: dict[str, tuple[pd.DataFrame, pd.Series]] = {}
    for name in SPLITS:
        X, y = parts[name]
        missing = [f for f in feats if f not in X.columns]
        if missing and len(X.columns):
            raise TrainingDataError(f"missing feature column(s): {missing}; the table has {list(X.columns)}")
        if len(X) != len(y):
            raise TrainingDataError(f"the {name} split: X has {len(X)} rows but y has {len(y)}")
        if len(y) == 0:
            raise TrainingDataError(f"the {name} split is empty (check the period boundaries / shares)")
        _check_labels(y, where=f"labels of the {name} split", single_class=True)
        ys = pd.Series(np.asarray(y).astype(np.int64), name=y.name or "label")
        if name in ("train", "val") and ys.nunique() < 2:
            raise TrainingDataError(
                f"the {name} split has a single class ({int(ys.iloc[0])}); a classifier needs both 0 and 1"
            )
        out[name] = (X, ys)
    return Splits(
        X_train=out["train"][0],
        y_train=out["train"][1],
        X_val=out["val"][0],
        y_val=out["val"][1],
        X_test=out["test"][0],
        y_test=out["test"][1],
        features=feats,
        kind=kind,
        test_context=context,
    )


def _check_labels(y: pd.Series, where: str, single_class: bool = False) -> None:
    """NaN / infinite / non-0/1 labels fail; so does a single class unless ``single_class`` allows it."""
    values = pd.to_numeric(y, errors="coerce").astype(float)
    if values.isna().any():
        raise TrainingDataError(f"{where}: {int(values.isna().sum())} NaN / non-numeric label(s)")
    if np.isinf(values).any():
        raise TrainingDataError(f"{where}: {int(np.isinf(values).sum())} infinite label(s)")
    odd = sorted(set(values.unique()) - {0.0, 1.0})
    if odd:
        raise TrainingDataError(f"{where}: labels must be 0/1, found {odd[:5]}")
    if not single_class and values.nunique() < 2:
        raise TrainingDataError(
            f"{where}: a single class ({values.iloc[0]:g}); a classifier needs both 0 and 1"
        )
