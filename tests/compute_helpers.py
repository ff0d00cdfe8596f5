"""Synthetic training sets in the training set's layout, for the Dask engine's tests.

The columns are those of ``modeling.training_set`` (``customer_id, as_of, period, split, churned`` and the
features, string features categorical) with the features of ``tests.modeling_helpers.synthetic_churn``:
the sharded readers and trainers are indifferent to which features a set holds, and a synthetic set
of a few thousand rows is built in milliseconds instead of a simulated world's minutes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from churn_assets.modeling.training_set import write_training_set
from tests.modeling_helpers import synthetic_churn

FEATURES = ["tenure", "monthly_charges", "support_tickets", "contract", "segment"]
CATEGORIES = {"contract": ["monthly", "one_year", "two_year"], "segment": ["business", "consumer"]}
PERIODS = 6  # train 1-4, val 5, test 6


def split_of(period: int) -> str:
    return "train" if period <= 4 else "val" if period == 5 else "test"


def synthetic_training_set(path: Path, n: int = 12_000, seed: int = 0) -> Path:
    """``n`` rows (one per customer id 1..n, ids spread over every shard) written like the training set."""
    X, y, period = synthetic_churn(n, seed=seed, periods=PERIODS)
    frame = pl.DataFrame(
        {
            "customer_id": pl.Series(range(1, n + 1), dtype=pl.Int64),
            "as_of": [dt.date(2024, 1, 1) + dt.timedelta(days=30 * (int(p) - 1)) for p in period],
            "period": period.astype("int64").to_numpy(),
            "split": [split_of(int(p)) for p in period],
            "churned": y.astype("int64").to_numpy(),
            "tenure": X["tenure"].astype("float64").to_numpy(),
            "monthly_charges": X["monthly_charges"].to_numpy(),
            "support_tickets": X["support_tickets"].astype("float64").to_numpy(),
            "contract": X["contract"].astype(str).to_numpy(),
            "segment": X["segment"].astype(str).to_numpy(),
        }
    ).sort("as_of", "customer_id")
    frame = frame.with_columns(pl.col("split", "contract", "segment").cast(pl.Categorical))
    return write_training_set(frame, path)
