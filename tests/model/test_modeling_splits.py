"""Splits and input validation; bad inputs fail before anything reaches the registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn_assets.modeling.splits import (
    TrainingDataError,
    assign_by_period,
    assign_by_time_share,
    assign_stratified,
    build_splits,
)
from churn_assets.modeling.train_table import train_from_frame
from tests.modeling_helpers import modeling_settings, synthetic_churn


def test_period_split_uses_default_month_boundaries() -> None:
    X, y, period = synthetic_churn(900)
    assignment = assign_by_period(period)
    splits = build_splits(X, y, assignment, kind="time")
    assert splits.sizes() == {
        "train": int((period <= 12).sum()),
        "val": int(period.between(13, 15).sum()),
        "test": int((period >= 16).sum()),
    }
    assert splits.features == list(X.columns)


def test_period_boundaries_are_configurable_and_rows_outside_are_dropped() -> None:
    X, y, period = synthetic_churn(900)
    assignment = assign_by_period(period, train=(1, 6), val=(7, 8), test=(9, 10))
    splits = build_splits(X, y, assignment)
    assert sum(splits.sizes().values()) == int((period <= 10).sum())


def test_overlapping_boundaries_are_rejected() -> None:
    _, _, period = synthetic_churn(100)
    with pytest.raises(TrainingDataError, match="ordered and disjoint"):
        assign_by_period(period, train=(1, 13), val=(13, 15), test=(16, 18))


def test_stratified_split_keeps_the_positive_rate() -> None:
    X, y, _ = synthetic_churn(2000)
    splits = build_splits(X, y, assign_stratified(y, 0.15, 0.15, seed=1), kind="stratified")
    rates = splits.positive_rates()
    assert max(rates.values()) - min(rates.values()) < 0.01
    assert splits.sizes()["test"] == pytest.approx(300, abs=2)


def test_time_share_split_never_cuts_a_time_value() -> None:
    times = pd.Series(pd.date_range("2024-01-01", periods=20, freq="MS").repeat(10), name="month")
    assignment = assign_by_time_share(times, 0.15, 0.15)
    by_time = pd.DataFrame({"t": times, "a": assignment}).groupby("t")["a"].nunique()
    assert (by_time == 1).all()
    order = {"train": 0, "val": 1, "test": 2}
    assert assignment.map(order).is_monotonic_increasing


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda X, y, a: (X, y.where(a != "train", 0), a), "train split has a single class"),
        (lambda X, y, a: (X.drop(columns="tenure"), y, a), "missing feature column"),
        (lambda X, y, a: (X, y.astype(float).mask(y.index == 3, np.nan), a), "NaN"),
        (lambda X, y, a: (X, y.astype(float).mask(y.index == 3, np.inf), a), "infinite"),
        (lambda X, y, a: (X, y, a.replace("val", "train")), "val split is empty"),
        (lambda X, y, a: (X, pd.Series(np.zeros(len(y), dtype=int)), a), "single class"),
    ],
    ids=["one-class-train", "missing-feature", "nan-label", "inf-label", "empty-val", "one-class-overall"],
)
def test_bad_inputs_fail_clearly_and_leave_the_registry_untouched(tmp_path, mutate, message) -> None:
    X, y, period = synthetic_churn(600)
    X2, y2, a2 = mutate(X, y, assign_by_period(period))
    settings = modeling_settings(tmp_path / "home")
    with pytest.raises(TrainingDataError, match=message):
        train_from_frame(X2, y2, a2, settings, data_hash="x", features=list(X.columns))
    # Nothing was tuned, tracked or registered: the state folder has no optuna/mlflow/registry store.
    assert not any((tmp_path / "home" / d).exists() for d in ("optuna", "mlflow", "registry"))
