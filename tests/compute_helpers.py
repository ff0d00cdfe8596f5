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
from distributed import WorkerPlugin

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


class KillWorkerOnTask(WorkerPlugin):
    """A Dask worker plugin that kills its own worker PROCESS (SIGKILL, no cleanup) when a task whose key
    starts with ``prefix`` begins executing on it — a real worker loss in the middle of a stage.

    ``marker``: a file that makes it fire once across the cluster (the first worker to create it dies; the
    nanny's restarted worker and the others carry on); without it, every attempt is killed, so the
    scheduler gives the task up (``distributed.scheduler.allowed-failures``) and the stage fails.
    """

    name = "kill-worker-on-task"

    def __init__(self, prefix: str, marker: str | None = None) -> None:
        self.prefix = prefix
        self.marker = marker

    def setup(self, worker) -> None:  # type: ignore[no-untyped-def]
        self.worker = worker

    def transition(self, key, start, finish, **kwargs) -> None:  # type: ignore[no-untyped-def]
        import os
        import signal

        name = key if isinstance(key, str) else str(key[0]) if isinstance(key, tuple) else str(key)
        if finish != "executing" or not name.startswith(self.prefix):
            return
        if self.marker is not None:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
